"""Write a SourceImage as a tiled, compressed OME-TIFF with a SubIFD pyramid, plane by plane.

Memory stays bounded: each plane is read in bands of one tile row; the next pyramid level is
written to a scratch file as the band goes by and read back band by band for its own pass.
"""
from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from converters.base import ConversionError, ConvertOptions, SourceImage
from converters.omexml import ome_xml
from converters.planes import FilePlane

# OME pixel types Bio-Formats reads; other dtypes are widened to one of these before writing.
OME_DTYPES = {np.dtype(t) for t in ("u1", "i1", "u2", "i2", "u4", "i4", "f4", "f8")}
_CODECS = {"zstd": "zstd", "zlib": "zlib", "deflate": "zlib", "lzw": "lzw", "none": None, "": None}
FAST_LEVELS = {"zstd": 1, "zlib": 1}
ENCODE_BUFFER = 16 * 2**20
BIGTIFF_ABOVE = 2**32 - 2**28  # classic TIFF offsets are 32-bit; keep a margin for tags and pyramid


def write(image: SourceImage, out: Path, options: ConvertOptions, microscope: str | None) -> None:
    """Write image to out (replacing it); the caller turns any ConversionError into a failed job."""
    if image.dtype not in OME_DTYPES:
        raise ConversionError(f"pixel type {image.dtype} cannot be stored in OME-TIFF")
    try:
        compression = _CODECS[options.compression.lower()]
    except KeyError:
        raise ConversionError(
            f"compression {options.compression!r} is not one of {', '.join(sorted(k for k in _CODECS if k))}"
        ) from None
    # level 1 of zstd/zlib: 4x faster than their defaults, and as small on noisy EM pixels
    level = options.compression_level if options.compression_level is not None else FAST_LEVELS.get(compression)
    ny, nx = image.shape["Y"], image.shape["X"]
    tile = (min(options.tile, _ceil16(ny)), min(options.tile, _ceil16(nx)))
    levels = _levels(ny, nx, options.pyramid_above)
    nplanes = image.shape["T"] * image.shape["C"] * image.shape["Z"]
    raw_bytes = nplanes * ny * nx * image.dtype.itemsize
    # UTF-8 bytes: tifffile refuses non-ASCII str, and Bio-Formats does not take "&#181;m" for a unit
    xml = ome_xml(image, microscope, out.name, nplanes).encode("utf-8")
    kwargs = dict(
        tile=tile, dtype=image.dtype, photometric="minisblack", compression=compression,
        compressionargs={"level": level} if level is not None else None,
        metadata=None, maxworkers=max(1, options.workers),
        buffersize=ENCODE_BUFFER,  # tifffile's default batch (hundreds of MiB) would break the memory bound
    )
    part = out.with_name(out.name + ".part")
    try:
        with tifffile.TiffWriter(part, bigtiff=raw_bytes * 4 // 3 > BIGTIFF_ABOVE, ome=False) as tif, \
                tempfile.TemporaryDirectory(dir=out.parent, prefix=".pyramid-") as scratch:
            written = 0
            for plane in image.planes():
                if plane.shape != (ny, nx):
                    raise ConversionError(f"plane {written} is {plane.shape[1]}x{plane.shape[0]}, expected {nx}x{ny}")
                _write_pyramid(tif, plane, levels, Path(scratch), kwargs, xml if written == 0 else None)
                written += 1
            if written != nplanes:
                raise ConversionError(f"the file yields {written} planes, its header says {nplanes}")
        os.replace(part, out)
    except OSError as e:
        raise ConversionError(f"{out.name} could not be written: {e.strerror or e}") from None
    finally:
        part.unlink(missing_ok=True)


def _write_pyramid(tif, plane, levels: int, scratch: Path, kwargs: dict, description: str | None) -> None:
    """Write one plane and its reduced levels; each level's pass also produces the next level."""
    source = plane
    for level in range(levels + 1):
        shape = source.shape
        reduced = scratch / f"level{level + 1}.raw" if level < levels else None
        tiles = _tiles(source, kwargs["tile"], reduced)
        extra = {"description": description, "subifds": levels} if level == 0 else {"subfiletype": 1}
        if level == 0 and description is None:
            extra.pop("description")
        try:
            tif.write(tiles, shape=shape, **kwargs, **extra)
        finally:
            tiles.close()  # flushes and closes the reduced level's scratch file before it is read
        if reduced is not None:
            source = FilePlane(reduced, 0, (math.ceil(shape[0] / 2), math.ceil(shape[1] / 2)), source.dtype)


def _tiles(plane, tile: tuple[int, int], reduced: Path | None) -> Iterator[np.ndarray]:
    """Yield the plane's tiles row by row; write its 2x2-mean reduction to `reduced` on the way."""
    ny, nx = plane.shape
    th, tw = tile
    sink = open(reduced, "wb") if reduced is not None else None
    try:
        for y0 in range(0, ny, th):
            band = plane.rows(y0, min(y0 + th, ny))
            if band.shape != (min(th, ny - y0), nx):
                raise ConversionError(f"a band of rows has shape {band.shape}, expected {(min(th, ny - y0), nx)}")
            # reduce first: tifffile stops pulling after the last tile, so nothing may follow it
            if sink is not None:
                sink.write(_halve(band).tobytes())
            for x0 in range(0, nx, tw):
                yield band[:, x0:x0 + tw]
    finally:
        if sink is not None:
            sink.close()


def _halve(band: np.ndarray) -> np.ndarray:
    """2x2 mean (integers rounded half up); odd edges are padded by repeating the last row/column.

    Pairwise sums of strided views: several times faster than mean() over a reshaped block.
    """
    ny, nx = band.shape
    if ny % 2 or nx % 2:
        band = np.pad(band, ((0, ny % 2), (0, nx % 2)), mode="edge")
    if band.dtype.kind in "iu":
        # the narrowest type that holds a sum of four: halves the memory traffic for 8-bit SEM images
        work = {1: np.int16, 2: np.int32}.get(band.dtype.itemsize, np.int64)
        total = band[0::2].astype(work)
        total += band[1::2]
        total = total[:, 0::2] + total[:, 1::2]
        return ((total + 2) >> 2).astype(band.dtype)
    work = np.float64 if band.dtype.itemsize == 8 else np.float32
    total = band[0::2].astype(work)
    total += band[1::2]
    return ((total[:, 0::2] + total[:, 1::2]) * 0.25).astype(band.dtype)


def _levels(ny: int, nx: int, above: int) -> int:
    """Number of reduced levels: halve until the image fits within `above`/2 px, none for small images."""
    if max(ny, nx) <= above:
        return 0
    return max(1, math.ceil(math.log2(max(ny, nx) / (above / 2))))


def _ceil16(n: int) -> int:
    return max(16, -(-n // 16) * 16)
