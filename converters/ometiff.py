"""Write a SourceImage as a tiled, compressed OME-TIFF with a SubIFD pyramid, plane by plane.

Memory stays bounded: each plane is read in bands of one tile row; the next pyramid level is
written to a scratch file as the band goes by and read back band by band for its own pass. Tiles
are compressed on every core (ConvertOptions.workers) while the next band is read.
"""
from __future__ import annotations

import contextlib
import math
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

from converters.base import ConversionError, ConvertOptions, SourceImage
from converters.omexml import ome_xml
from converters.planes import FilePlane

# OME pixel types Bio-Formats reads; other dtypes are widened to one of these before writing.
OME_DTYPES = {np.dtype(t) for t in ("u1", "i1", "u2", "i2", "u4", "i4", "f4", "f8")}
_CODECS = {"zstd": "zstd", "zlib": "zlib", "deflate": "zlib", "lzw": "lzw", "none": None, "": None}
FAST_LEVELS = {"zstd": 1, "zlib": 1}
ENCODE_BUFFER = 16 * 2**20  # compressed or waiting tiles held at once, beyond the band being read
_ENCODERS = {"zstd": imagecodecs.zstd_encode, "zlib": imagecodecs.zlib_encode, "lzw": imagecodecs.lzw_encode}
BIGTIFF_ABOVE = 2**32 - 2**28  # classic TIFF offsets are 32-bit; keep a margin for tags and pyramid
HALVE_ROWS = 32  # rows of a band reduced at once (even)


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
    # zstd compresses an input of 256 KiB or less with its small-input parameters, at half the speed
    # on SEM images: one-byte pixels get tiles twice as wide, 512 KiB like a 16-bit tile
    wide = 2 if image.dtype.itemsize == 1 else 1
    tile = (min(options.tile, _ceil16(ny)), min(options.tile * wide, _ceil16(nx)))
    levels = _levels(ny, nx, options.pyramid_above)
    nplanes = image.shape["T"] * image.shape["C"] * image.shape["Z"]
    raw_bytes = nplanes * ny * nx * image.dtype.itemsize
    # UTF-8 bytes: tifffile refuses non-ASCII str, and Bio-Formats does not take "&#181;m" for a unit
    xml = ome_xml(image, microscope, out.name, nplanes).encode("utf-8")
    encode = _encoder(compression, level)
    kwargs = dict(tile=tile, dtype=image.dtype, photometric="minisblack", compression=compression, metadata=None)
    progress = _Progress(options.progress, nplanes * _pyramid_pixels(ny, nx, levels))
    part = out.with_name(out.name + ".part")
    try:
        with tifffile.TiffWriter(part, bigtiff=raw_bytes * 4 // 3 > BIGTIFF_ABOVE, ome=False) as tif, \
                tempfile.TemporaryDirectory(dir=out.parent, prefix=".pyramid-") as scratch, \
                ThreadPoolExecutor(max(1, options.workers), thread_name_prefix="tile-encode") as pool, \
                _Tiles(image, nplanes, levels, tile, Path(scratch), encode, pool, max(1, options.workers)) as tiles:
            for index in range(nplanes):
                for level, shape in enumerate(_level_shapes(ny, nx, levels)):
                    if level == 0:
                        extra = {"subifds": levels} | ({"description": xml} if index == 0 else {})
                    else:
                        extra = {"subfiletype": 1}
                    tif.write(tiles.take(shape, progress), shape=shape, **kwargs, **extra)
            tiles.finish()
        os.replace(part, out)
    except OSError as e:
        raise ConversionError(f"{out.name} could not be written: {e.strerror or e}") from None
    finally:
        part.unlink(missing_ok=True)


def _encoder(compression: str | None, level: int | None) -> Callable[[np.ndarray], bytes]:
    if compression is None:
        return lambda tile: tile.tobytes()
    codec = _ENCODERS[compression]
    if level is None:
        return lambda tile: codec(tile)
    return lambda tile: codec(tile, level=level)


class _Progress:
    """Tells options.progress the share of pixels written (all planes and their reduced levels)."""

    def __init__(self, report: Callable[[float], None] | None, total: int):
        self.report, self.total, self.done, self.told = report, max(1, total), 0, 0.0

    def add(self, pixels: int) -> None:
        self.done += pixels
        share = min(1.0, self.done / self.total)
        if self.report is not None and (share - self.told >= 0.005 or share == 1.0):
            self.told = share
            self.report(share)


def _level_shapes(ny: int, nx: int, levels: int) -> list[tuple[int, int]]:
    """The plane's shape and those of its reduced levels (each the 2x2 mean of the one before)."""
    shapes = [(ny, nx)]
    for _ in range(levels):
        ny, nx = math.ceil(ny / 2), math.ceil(nx / 2)
        shapes.append((ny, nx))
    return shapes


def _pyramid_pixels(ny: int, nx: int, levels: int) -> int:
    return sum(y * x for y, x in _level_shapes(ny, nx, levels))


class _Tiles:
    """Every plane's tiles and those of its reduced levels, compressed on every core, in the order
    tifffile writes them.

    One reader thread goes through the planes and their levels in that order: it reads a level band
    by band (one tile row), writes each band's 2x2 reduction to the next level's scratch file (read
    back, band by band, for that level's own pass), cuts the band into tiles and hands them to the
    pool, while tifffile writes the tiles done. Reading, reducing, compressing and writing overlap,
    and the pipeline never drains between levels or planes (a Velox stack has dozens). Memory holds
    the band being read and at most ENCODE_BUFFER of tiles waiting (copied out of their band).
    """

    def __init__(self, image: SourceImage, nplanes: int, levels: int, tile: tuple[int, int], scratch: Path,
                 encode: Callable[[np.ndarray], bytes], pool: ThreadPoolExecutor, workers: int):
        self.image, self.nplanes, self.levels, self.tile, self.scratch = image, nplanes, levels, tile, scratch
        self.encode, self.pool = encode, pool
        self.waiting: queue.Queue = queue.Queue(
            maxsize=max(2 * workers, ENCODE_BUFFER // (tile[0] * tile[1] * image.dtype.itemsize)))
        self.stop = threading.Event()
        self.reader = threading.Thread(target=self._read, name="tile-read", daemon=True)

    def __enter__(self) -> _Tiles:
        self.reader.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        while self.reader.is_alive():  # unblock a reader waiting for room, then let it end
            try:
                self.waiting.get(timeout=0.05)
            except queue.Empty:
                pass
        self.reader.join()

    def take(self, shape: tuple[int, int], progress: _Progress) -> Iterator[bytes]:
        """The compressed tiles of the next level of this shape, as they are done."""
        th, tw = self.tile
        for _ in range(-(-shape[0] // th) * -(-shape[1] // tw)):
            item = self.waiting.get()
            if isinstance(item, BaseException):
                raise item
            future, pixels = item
            encoded = future.result()
            progress.add(pixels)  # before the yield: tifffile takes the last tile and stops
            yield encoded

    def finish(self) -> None:
        """Raise what the reader found after the last plane (more planes than the header says)."""
        item = self.waiting.get()
        if isinstance(item, BaseException):
            raise item

    def _read(self) -> None:
        ny, nx = self.image.shape["Y"], self.image.shape["X"]
        try:
            planes, index = iter(self.image.planes()), 0
            for plane in planes:
                if index == self.nplanes:  # counted without reading them, for the message
                    raise ConversionError(f"the file yields {index + 1 + sum(1 for _ in planes)} planes, "
                                          f"its header says {self.nplanes}")
                if plane.shape != (ny, nx):
                    raise ConversionError(f"plane {index} is {plane.shape[1]}x{plane.shape[0]}, expected {nx}x{ny}")
                source = plane
                for level in range(self.levels + 1):
                    reduced = self.scratch / f"level{level + 1}.raw" if level < self.levels else None
                    if not self._level(source, reduced):
                        return
                    if reduced is not None:  # its scratch file is complete and closed
                        shape = (math.ceil(source.shape[0] / 2), math.ceil(source.shape[1] / 2))
                        source = FilePlane(reduced, 0, shape, source.dtype)
                index += 1
            if index != self.nplanes:
                raise ConversionError(f"the file yields {index} planes, its header says {self.nplanes}")
            _put(self.waiting, None, self.stop)
        except BaseException as e:  # handed to the writing thread, which raises it
            _put(self.waiting, e, self.stop)

    def _level(self, plane, reduced: Path | None) -> bool:
        """Queue one level's tiles (and write its reduction); False when the writer stopped."""
        ny, nx = plane.shape
        th, tw = self.tile
        with open(reduced, "wb") if reduced is not None else contextlib.nullcontext() as sink:
            for y0 in range(0, ny, th):
                band = plane.rows(y0, min(y0 + th, ny))
                if band.shape != (min(th, ny - y0), nx):
                    raise ConversionError(f"a band of rows has shape {band.shape}, expected {(min(th, ny - y0), nx)}")
                if sink is not None:
                    sink.write(_halve(band).data)
                for x0 in range(0, nx, tw):
                    part = _cut(band, x0, self.tile)
                    item = (self.pool.submit(self.encode, part), min(th, ny - y0) * min(tw, nx - x0))
                    if not _put(self.waiting, item, self.stop):
                        return False
                del band, part  # the tiles own their pixels: the band goes before the next is read
        return True


def _cut(band: np.ndarray, x0: int, tile: tuple[int, int]) -> np.ndarray:
    """The tile at column x0 as its own contiguous array, so that tiles waiting to be compressed hold
    only themselves, not the whole band they came from. Edge tiles are padded with zeros to the full
    tile, as TIFF stores them (np.pad takes longer than compressing the tile)."""
    part = band[:, x0:x0 + tile[1]]
    if part.shape == tile:
        return part.copy()
    full = np.zeros(tile, band.dtype)
    full[:part.shape[0], :part.shape[1]] = part
    return full


def _put(waiting: queue.Queue, item, stop: threading.Event) -> bool:
    """Queue an item unless the writer stopped; False when it did."""
    while not stop.is_set():
        try:
            waiting.put(item, timeout=0.05)
            return True
        except queue.Full:
            pass
    return False


def _halve(band: np.ndarray) -> np.ndarray:
    """2x2 mean (integers rounded half up); odd edges are padded by repeating the last row/column.

    Pairwise sums of strided views: several times faster than mean() over a reshaped block. The band
    is reduced HALVE_ROWS rows at a time, so the sums in a wider type (a 16-bit band's in 32 bits)
    take a MiB or two and stay in cache, instead of doubling a band that may be 16+ MiB.
    """
    ny, nx = band.shape
    out = np.empty((-(-ny // 2), -(-nx // 2)), band.dtype)
    for y0 in range(0, ny, HALVE_ROWS):
        block = band[y0:y0 + HALVE_ROWS]
        rows, cols = block.shape
        if rows % 2 or cols % 2:
            block = np.pad(block, ((0, rows % 2), (0, cols % 2)), mode="edge")
        out[y0 // 2:(y0 + rows + 1) // 2] = _halve_block(block)
    return out


def _halve_block(block: np.ndarray) -> np.ndarray:
    if block.dtype.kind in "iu":
        # the narrowest type that holds a sum of four, cast as the rows are added: for 8-bit SEM
        # images this halves the memory traffic
        wider = {1: "2", 2: "4"}.get(block.dtype.itemsize, "8")
        work = np.dtype(("u" if block.dtype.kind == "u" and wider != "8" else "i") + wider)
        total = np.add(block[0::2], block[1::2], dtype=work)
        total = np.add(total[:, 0::2], total[:, 1::2])
        total += 2
        total >>= 2
        return total
    work = np.float64 if block.dtype.itemsize == 8 else np.float32
    total = np.add(block[0::2], block[1::2], dtype=work)
    return (total[:, 0::2] + total[:, 1::2]) * 0.25


def _levels(ny: int, nx: int, above: int) -> int:
    """Number of reduced levels: halve until the image fits within `above`/2 px, none for small images."""
    if max(ny, nx) <= above:
        return 0
    return max(1, math.ceil(math.log2(max(ny, nx) / (above / 2))))


def _ceil16(n: int) -> int:
    return max(16, -(-n // 16) * 16)
