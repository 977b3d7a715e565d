"""TIFF helpers for the SEM plugins: identify by tag, and read one page in row bands.

The SEM plugins read the same tags RosettaSciIO reads, with the same rules, through tifffile as it
does; rsciio's own TIFF read is not called: lazily it leaves its file open, eagerly it loads the
whole image.
"""
from __future__ import annotations

import struct
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
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError, struct.error):
        return False


def tiff_datetime(page: tifffile.TiffPage, zone: tzinfo) -> datetime | None:
    """The TIFF DateTime tag (306, "YYYY:MM:DD HH:MM:SS", the writing PC's clock) in the facility's zone:
    when the SEM software wrote the file, the last source of an acquisition time."""
    tag = page.tags.get(306)
    try:
        return localize(datetime.strptime(clean(tag.value), "%Y:%m:%d %H:%M:%S"), zone) if tag else None
    except (ValueError, TypeError):
        return None


def open_tiff(path: Path, warnings: list[str] | None = None) -> tifffile.TiffFile:
    """The TIFF, refused with the reason when it is cut inside the image directories it lists. When
    only the pointer after its last one leads past the file's end, the images before it are read and
    `warnings` (if given) says the file may be cut short: a copy cut between two directories looks
    the same as a writer's stray pointer, and a valid file must not be called damaged."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
    big = head[2:4] in (b"+\x00", b"\x00+")
    order = "<" if head[:2] == b"II" else ">"
    need = 16 if big else 8
    if head[:4] in TIFF_MAGIC and len(head) >= need:
        first = struct.unpack(order + ("Q" if big else "I"), head[8:16] if big else head[4:8])[0]
        if first + 2 > size:
            raise ConversionError(f"{path.name} is truncated: its first image directory is at byte {first}, "
                                  f"the file holds {size} bytes")
    try:
        tif = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, struct.error) as e:
        raise ConversionError(f"{path.name} is truncated or damaged: its TIFF structure cannot be read ({e}); "
                              f"the file holds {size} bytes") from None
    if not len(tif.pages):
        tif.close()
        raise ConversionError(f"{path.name} is truncated or damaged: it holds no readable image directory")
    try:
        cut = _cut_directory(path, tif.pages.first.offset, len(tif.pages), size, order, big)
    except ConversionError:
        tif.close()
        raise
    if cut is not None and warnings is not None:
        warnings.append(f"the file may be cut short: its image directory {cut} would lie past its end (byte "
                        f"{size}); what its first {cut - 1} hold was read")
    return tif


def _cut_directory(path: Path, first: int, count: int, size: int, order: str, big: bool) -> int | None:
    """The number of the image directory after the `count` tifffile found when it runs past the file's
    end (tifffile stops the chain there with only an error in its log and keeps the pages before it);
    a file cut inside one of the `count` is refused (a page tifffile listed could not be read). An
    image directory is a tag count (2 bytes, 8 in BigTIFF), its tags (12 or 20 bytes each), then the
    offset of the next directory (4 or 8 bytes; 0 ends the chain)."""
    count_format, tag_size, offset_format = (order + "Q", 20, order + "Q") if big else (order + "H", 12, order + "I")
    at = first
    with open(path, "rb") as f:
        for n in range(1, count + 2):
            f.seek(at)
            tags = f.read(struct.calcsize(count_format))
            end = at + len(tags) + struct.calcsize(offset_format)
            if len(tags) == struct.calcsize(count_format):
                end += struct.unpack(count_format, tags)[0] * tag_size
            if end > size or len(tags) < struct.calcsize(count_format):
                if n > count:
                    return n
                raise ConversionError(f"{path.name} is truncated: its image directory {n} at byte {at} runs past the "
                                      f"end of the {size} bytes the file holds (an interrupted copy?)")
            f.seek(end - struct.calcsize(offset_format))
            at = struct.unpack(offset_format, f.read(struct.calcsize(offset_format)))[0]
            if not at:
                return None
    return None


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


class SegmentPlane:
    """One sample of a TIFF page (or frame of a series), decoded strip by strip or tile row by tile
    row: a band of rows costs the segments that cover it, never the whole page."""

    def __init__(self, path: Path, keyframe: tifffile.TiffPage, offsets, counts, sample: int = 0):
        self.path, self.page, self.sample = Path(path), keyframe, sample
        self.offsets, self.counts = tuple(offsets), tuple(counts)
        self.shape = (keyframe.imagelength, keyframe.imagewidth)
        self.dtype = np.dtype("u1" if keyframe.dtype == np.bool_ else keyframe.dtype).newbyteorder("=")
        height, width = self.shape
        if not height or not width:
            raise ConversionError(f"{self.path.name}: its image is {width}x{height} pixels: there is nothing to import")
        if keyframe.is_tiled:
            self.segment = (keyframe.tilelength, keyframe.tilewidth)
        else:
            self.segment = (min(keyframe.rowsperstrip or height, height), width)
        if min(self.segment) < 1:
            raise ConversionError(f"{self.path.name}: its tiles or strips are {self.segment} pixels: the file is damaged")
        self.down, self.across = -(-height // self.segment[0]), -(-width // self.segment[1])
        separate = keyframe.planarconfig == 2 and keyframe.samplesperpixel > 1
        self.first = sample * self.down * self.across if separate else 0  # planar: one set of segments per sample
        self.pick = None if separate or keyframe.samplesperpixel == 1 else sample
        if len(self.offsets) < self.first + self.down * self.across:
            raise ConversionError(f"{self.path.name}: a page lists {len(self.offsets)} data segments where its "
                                  f"size needs {self.first + self.down * self.across}: the file is damaged")
        # uncompressed strips (what most instruments write) are read row by row, however tall the strip
        self.raw = (keyframe.compression == 1 and not keyframe.is_tiled and keyframe.predictor == 1
                    and keyframe.fillorder == 1 and keyframe.bitspersample in (8, 16, 32, 64))
        samples = 1 if separate else keyframe.samplesperpixel
        if not self.raw and self.segment[0] * self.segment[1] * samples * self.dtype.itemsize > MAX_BAND_BYTES:
            raise ConversionError(f"{self.path.name}: one compressed strip holds more than "
                                  f"{MAX_BAND_BYTES // 2**20} MiB of pixels; such files are not supported")
        self.stored = np.dtype(keyframe.dtype).newbyteorder(keyframe.parent.byteorder)
        self.samples = samples
        self.cached: tuple[int, np.ndarray] | None = None  # the last segment decoded: bands share it

    def rows(self, y0: int, y1: int) -> np.ndarray:
        out = np.zeros((y1 - y0, self.shape[1]), self.dtype)
        step_y, step_x = self.segment
        with open(self.path, "rb") as f:
            for row in range(y0 // step_y, (y1 - 1) // step_y + 1):
                for col in range(self.across):
                    top, left = row * step_y, col * step_x
                    lo, hi = max(y0, top), min(y1, top + step_y, self.shape[0])
                    index = self.first + row * self.across + col
                    if self.raw:
                        if self.counts[index]:  # a strip the writer left out reads as zeros
                            self._raw_rows(f, index, lo - top, hi - top, out[lo - y0:hi - y0])
                        continue
                    block = self._segment(f, index)
                    if block is None:
                        continue  # a segment the writer left out reads as zeros (TIFF's sparse files)
                    right = min(left + step_x, self.shape[1])
                    out[lo - y0:hi - y0, left:right] = block[lo - top:hi - top, :right - left]
        return out

    def _raw_rows(self, f, index: int, r0: int, r1: int, into: np.ndarray) -> None:
        """Rows r0..r1 of an uncompressed strip, read at their offset into `into` (straight into it
        when the file holds one sample in this machine's byte order: no copy of the band)."""
        row_bytes = self.shape[1] * self.samples * self.stored.itemsize
        start, size = self.offsets[index] + r0 * row_bytes, (r1 - r0) * row_bytes
        if r1 * row_bytes > self.counts[index]:
            raise ConversionError(f"{self.path.name}: a strip holds {self.counts[index]} bytes where its rows need "
                                  f"{r1 * row_bytes}: the file is damaged")
        f.seek(start)
        direct = self.samples == 1 and self.stored == self.dtype
        data = into if direct else np.empty((r1 - r0, self.shape[1], self.samples), self.stored)
        if f.readinto(memoryview(data).cast("B")) < size:
            raise ConversionError(f"{self.path.name} is truncated: its pixels need bytes {start}-{start + size - 1}, "
                                  f"the file ends at byte {self.path.stat().st_size}")
        if not direct:
            into[:] = data[..., 0 if self.pick is None else self.pick]

    def _segment(self, f, index: int) -> np.ndarray | None:
        if self.cached is not None and self.cached[0] == index:
            return self.cached[1]
        block = self._decoded(f, index)
        self.cached = (index, block)
        return block

    def _decoded(self, f, index: int) -> np.ndarray | None:
        offset, count = self.offsets[index], self.counts[index]
        if not count:
            return None
        f.seek(offset)
        data = f.read(count)
        if len(data) < count:
            raise ConversionError(
                f"{self.path.name} is truncated: its pixels need bytes {offset}-{offset + count - 1}, the file ends "
                f"at byte {self.path.stat().st_size}")
        try:
            block = self.page.decode(data, index, jpegtables=self.page.jpegtables)[0]
        except (ValueError, RuntimeError, tifffile.TiffFileError, NotImplementedError) as e:  # codecs raise RuntimeErrors
            raise ConversionError(f"{self.path.name}: its pixel data cannot be decoded ({type(e).__name__}: {e}); "
                                  f"the file is damaged or uses a compression we cannot read") from None
        if block is None:
            raise ConversionError(f"{self.path.name}: its pixel data uses a compression we cannot read")
        block = block[0]  # (rows, columns, samples) of the segment's one depth plane
        return block[..., 0 if self.pick is None else self.pick]
