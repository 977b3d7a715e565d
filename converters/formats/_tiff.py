"""TIFF helpers for the SEM plugins: identify by tag, and read one page in row bands.

The SEM plugins read the same tags RosettaSciIO reads, with the same rules, through tifffile as it
does; rsciio's own TIFF read is not called: lazily it leaves its file open, eagerly it loads the
whole image.
"""
from __future__ import annotations

from datetime import datetime, tzinfo
from pathlib import Path

import numpy as np
import tifffile

from converters.base import ConversionError
from converters.meta import clean, localize
from converters.planes import MAX_BAND_BYTES, FilePlane, FuncPlane

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def has_tag(head: bytes, path: Path, *codes: int) -> bool:
    if head[:4] not in TIFF_MAGIC:
        return False
    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages.first.tags
            return any(code in tags for code in codes)
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError):
        return False


def tiff_datetime(page: tifffile.TiffPage, zone: tzinfo) -> datetime | None:
    """The TIFF DateTime tag (306, "YYYY:MM:DD HH:MM:SS", the writing PC's clock) in the facility's zone:
    when the SEM software wrote the file, the last source of an acquisition time."""
    tag = page.tags.get(306)
    try:
        return localize(datetime.strptime(clean(tag.value), "%Y:%m:%d %H:%M:%S"), zone) if tag else None
    except (ValueError, TypeError):
        return None


def open_tiff(path: Path) -> tifffile.TiffFile:
    try:
        return tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as e:
        raise ConversionError(f"{path.name} is not a readable TIFF file: {e}") from None


def page_plane(path: Path, page: tifffile.TiffPage, rows: int | None = None):
    """A plane of the page's first `rows` rows (all by default), read without loading the page.

    Uncompressed contiguous pages (what SEM software writes) are read band by band at their
    offset; compressed pages are decoded whole, which is refused above MAX_BAND_BYTES.
    """
    if page.samplesperpixel != 1:
        raise ConversionError(f"{path.name}: SEM images with {page.samplesperpixel} samples per pixel are not supported")
    height, width = page.imagelength, page.imagewidth
    if not height or not width:
        raise ConversionError(f"{path.name}: its image is {width}x{height} pixels: there is nothing to import")
    rows = height if rows is None else rows
    dtype = np.dtype(page.dtype)
    offset, size = (page.dataoffsets[0], sum(page.databytecounts)) if page.is_contiguous else (None, None)
    if offset is not None and page.compression == 1 and size == height * width * dtype.itemsize and page.fillorder == 1:
        stored = dtype.newbyteorder(page.parent.byteorder)
        if offset + size > path.stat().st_size:
            raise ConversionError(
                f"{path.name} is truncated: the image needs {size} bytes from byte {offset}, "
                f"the file holds {path.stat().st_size}"
            )
        plane = FilePlane(path, offset, (height, width), stored)
        return FuncPlane((rows, width), plane.dtype, plane.rows)
    if height * width * dtype.itemsize > MAX_BAND_BYTES:
        raise ConversionError(
            f"{path.name}: compressed or strip-scattered SEM images larger than {MAX_BAND_BYTES // 2**20} MiB "
            f"are not supported"
        )

    decoded: list[np.ndarray] = []  # decoded once, on the first band asked for

    def read(y0: int, y1: int) -> np.ndarray:
        if not decoded:
            with tifffile.TiffFile(path) as tif:
                try:
                    decoded.append(tif.pages.first.asarray())  # palette images stay raw indices
                except (ValueError, tifffile.TiffFileError, OSError) as e:
                    raise ConversionError(f"{path.name}: the image data cannot be decoded ({e})") from None
        return decoded[0][y0:y1]

    return FuncPlane((rows, width), dtype.newbyteorder("="), read)
