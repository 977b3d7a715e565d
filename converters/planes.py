"""Plane readers shared by the plugins: raw bytes at an offset, HDF5 slices, and transformations.

Each reads only the rows asked for, with plain reads rather than memory maps, so the converting
process's resident memory stays bounded by one band of rows whatever the file size.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from converters.base import ConversionError

# Largest compressed plane decoded whole (plugins that cannot read it in bands refuse larger ones).
MAX_BAND_BYTES = 256 * 2**20


class FilePlane:
    """A plane stored uncompressed, row-major, at `offset` in a file."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, int], dtype: np.dtype):
        self.path, self.offset, self.shape = Path(path), int(offset), (int(shape[0]), int(shape[1]))
        self.stored = np.dtype(dtype)
        self.dtype = self.stored.newbyteorder("=")

    def rows(self, y0: int, y1: int) -> np.ndarray:
        width = self.shape[1]
        count = (y1 - y0) * width
        start = self.offset + y0 * width * self.stored.itemsize
        with open(self.path, "rb") as f:
            f.seek(start)
            data = np.fromfile(f, dtype=self.stored, count=count)
        if data.size != count:
            raise ConversionError(
                f"{self.path.name} is truncated: rows {y0}-{y1 - 1} of a {self.shape[1]}x{self.shape[0]} image "
                f"are missing (the file ends at byte {self.path.stat().st_size})"
            )
        return data.reshape(y1 - y0, width).astype(self.dtype, copy=False)


class FuncPlane:
    """A plane whose row bands come from a function (an HDF5 slice, a crop, a decoded TIFF)."""

    def __init__(self, shape: tuple[int, int], dtype: np.dtype, read: Callable[[int, int], np.ndarray]):
        self.shape, self.dtype, self._read = (int(shape[0]), int(shape[1])), np.dtype(dtype), read

    def rows(self, y0: int, y1: int) -> np.ndarray:
        return np.ascontiguousarray(self._read(y0, y1), dtype=self.dtype)


def common_dtype(dtypes: list[np.dtype]) -> np.dtype:
    """The narrowest pixel type that holds every value of all these types exactly."""
    result = np.result_type(*dtypes)
    if result.kind == "f" and result.itemsize > 8:
        raise ConversionError("pixel type wider than 64-bit float is not supported")
    return result


class FlippedPlane:
    """Another plane upside down: formats that store the bottom row first (TIA)."""

    def __init__(self, plane):
        self.plane, self.shape, self.dtype = plane, plane.shape, plane.dtype

    def rows(self, y0: int, y1: int) -> np.ndarray:
        ny = self.shape[0]
        return np.ascontiguousarray(self.plane.rows(ny - y1, ny - y0)[::-1])
