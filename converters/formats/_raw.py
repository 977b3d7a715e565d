"""Planes stored uncompressed one after another in a file (MRC sections, DigitalMicrograph stacks)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from converters.formats._hdf5 import complex_parts
from converters.planes import FilePlane, FuncPlane


def stacked_planes(path: Path, offset: int, count: int, shape: tuple[int, int], stored: np.dtype,
                   dtype: np.dtype) -> Iterator[FuncPlane]:
    """`count` planes from `offset`, as `dtype`; a complex plane yields its amplitude, then its phase."""
    ny, nx = shape
    for i in range(count):
        plane = FilePlane(path, offset + i * ny * nx * stored.itemsize, shape, stored)
        if stored.kind == "c":
            _, amplitude, phase = complex_parts(plane.rows, stored)
            yield FuncPlane(shape, dtype, amplitude)
            yield FuncPlane(shape, dtype, phase)
        else:
            yield FuncPlane(shape, dtype, plane.rows)
