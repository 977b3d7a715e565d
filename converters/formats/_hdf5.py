"""HDF5 helpers for the EMD plugins: safe opening, band reads, complex data as amplitude and phase."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from converters.base import ConversionError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
CHUNK_CACHE = 64 * 2**20  # one frame-sized chunk stays cached while its bands are read


def open_h5(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r", rdcc_nbytes=CHUNK_CACHE)
    except OSError as e:
        raise ConversionError(f"{path.name} is not a readable HDF5 (EMD) file: {e}") from None


def h5_kind(head: bytes, path: Path, test: Callable[[h5py.File], bool]) -> bool:
    """True when the file starts with the HDF5 signature and its layout passes `test`."""
    if not head.startswith(HDF5_MAGIC):
        return False
    try:
        with h5py.File(path, "r") as f:
            return bool(test(f))
    except (OSError, KeyError, ValueError, TypeError):
        return False


def pixel_kind(dtype: np.dtype) -> str:
    """"real", "complex" (numpy complex or Velox's {realFloat, imagFloat} compound) or "other"."""
    if dtype.kind in "iuf" and dtype.itemsize <= 8:
        return "real"
    if dtype.kind == "c" or (dtype.names and len(dtype.names) == 2 and all(dtype[n].kind == "f" for n in dtype.names)):
        return "complex"
    return "other"


def as_complex(data: np.ndarray) -> np.ndarray:
    if data.dtype.names:
        real, imag = data.dtype.names
        return data[real] + 1j * data[imag].astype(np.result_type(data[imag].dtype, np.float32))
    return data


def complex_parts(read: Callable[[int, int], np.ndarray], dtype: np.dtype):
    """Two row readers, amplitude and phase (radians), of the float type matching the complex one."""
    real = np.dtype(dtype[dtype.names[0]]) if dtype.names else np.dtype(f"f{dtype.itemsize // 2}")
    out = np.float64 if real.itemsize == 8 else np.float32

    def amplitude(y0: int, y1: int) -> np.ndarray:
        return np.abs(as_complex(read(y0, y1))).astype(out)

    def phase(y0: int, y1: int) -> np.ndarray:
        return np.angle(as_complex(read(y0, y1))).astype(out)

    return np.dtype(out), amplitude, phase
