"""EDAX (TEAM, Genesis) spectrum images: a `.spd` map with its `.spc` and, when present, its `.ipr`.

The .spd holds only counts: (lines, points, channels) of 1, 2 or 4 bytes from `dataOffset` (rsciio's
get_spd_dtype_list). Its energy calibration and collection date are in the `.spc` of the same stem,
which TEAM writes beside it (the map's sum spectrum), and its pixel size (µm) in the `.ipr` of the
map's electron image (`<stem>_Img.ipr` as TEAM names it). RosettaSciIO (rsciio.edax) is the reader of
record for axes and headers; it is told the partners' names, which staging may have changed.

The map becomes one image: the counts of all channels at each pixel. Its sum spectrum, over every pixel,
is attached as CSV and plot; the full map stays in the original file. Both come from one pass over the
map in bands, so memory is one band and the image, whatever the map's size.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from converters.base import Accounted, ConversionError, ConvertOptions, SourceFile, SourceImage
from converters.formats._eds import read_signals, spc_collected, spectrum
from converters.meta import calibration, flatten
from converters.planes import FuncPlane

NAME = "EDAX map"
EXTENSIONS = (".spd",)
READERS = ("rsciio.edax",)
HELP = "EDS spectrum images: the map of counts becomes the image, its sum spectrum a CSV and plot"
PARTNERS = ({"name": "{stem}.spc", "what": ".spc file", "required": True},)
SIDECARS = ({"name": "{stem}_Img.ipr", "what": "EDAX image description (the map's pixel size)"},)
TAG = b"MAPSPECTRA_DATA"
HEADER_BYTES = 1068  # tag, 8 numbers, the electron image's name and a filler (rsciio get_spd_dtype_list)
BAND_BYTES = 16 * 2**20  # the map is summed this many bytes at a time
SUM_TITLE = "EDS (sum of the spectrum image)"
_COUNT_TYPES = {1: "<u1", 2: "<u2", 4: "<u4"}


def identify(head: bytes, path: Path) -> bool:
    return head.startswith(TAG)


def read(files: list[Path], options: ConvertOptions) -> SourceFile:
    spd = files[0]
    spc = next((f for f in files[1:] if f.suffix.lower() == ".spc"), None)
    ipr = next((f for f in files[1:] if f.suffix.lower() == ".ipr"), None)
    if spc is None:
        raise ConversionError(f"{spd.name} needs its {spd.stem}.spc in the same upload: the .spc holds the map's "
                              f"energy calibration")
    lines, points, channels, count_type, offset = _layout(spd)
    # the group's own partners, by their names here; without an .ipr, a name that is no file (else rsciio
    # would look for one named in the header, which this upload may not hold)
    signal = read_signals("edax", spd, "EDAX .spd", lazy=True, load_all_spc=True, spc_fname=str(spc),
                          ipr_fname=str(ipr) if ipr else os.devnull)[0]
    counts, total = _sums(spd, lines, points, channels, count_type, offset)
    header = signal["original_metadata"]
    acquired = spc_collected(header["spc_header"], options.timezone)
    eds = {f"EDAX.{k}": v for k, v in flatten({k: v for k, v in header.items() if k != "spc_header"}).items()}
    eds |= {f"EDAX.spc.{k}": v for k, v in flatten(header["spc_header"]).items()}
    y, x = signal["axes"][0], signal["axes"][1]
    found = calibration((float(x["scale"]), x["units"]), (float(y["scale"]), y["units"])) if ipr else None
    title = signal["metadata"]["General"].get("title") or "EDS Spectrum Image"
    image = SourceImage(
        shape={"T": 1, "C": 1, "Z": 1, "Y": lines, "X": points}, dtype=counts.dtype,
        planes=lambda: iter([FuncPlane((lines, points), counts.dtype, lambda y0, y1: counts[y0:y1])]),
        channels=["EDS counts (all channels)"], pixel_size=found.pixel_size if found else None, acquired=acquired,
        metadata=(found.metadata if found else {}) | eds,
    )
    summed = spectrum(signal, SUM_TITLE, "spectrum image", total)
    accounted = [Accounted(f"spectrum image {title}", "image", f"{spd.stem}: the counts of all {channels} channels "
                                                                f"at each pixel"),
                 Accounted(f"spectrum image {title}", "attachment",
                           f"summed into {SUM_TITLE}; the full map stays in the original file")]
    return SourceFile([image], [summed], accounted, acquired=acquired, metadata=eds)


def _layout(path: Path) -> tuple[int, int, int, str, int]:
    """The map's lines, points, channels, count type and data offset, checked against the file's size
    before anything is read or allocated from them."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES:
        raise ConversionError(f"{path.name} is truncated: an EDAX .spd header is {HEADER_BYTES} bytes, the file "
                              f"holds {size}")
    points, lines, channels, count_bytes, offset = struct.unpack_from("<i4I", head, 24)
    if count_bytes not in _COUNT_TYPES or min(points, lines, channels) <= 0:
        raise ConversionError(f"{path.name}: the .spd header declares {points}x{lines} points of {channels} channels "
                              f"of {count_bytes} bytes: not a valid spectrum image")
    needed = points * lines * channels * count_bytes
    if offset < HEADER_BYTES or offset + needed > size:
        raise ConversionError(f"{path.name} is truncated: its header says {points}x{lines} points of {channels} "
                              f"channels from byte {offset} ({offset + needed} bytes), the file holds {size}")
    return lines, points, channels, _COUNT_TYPES[count_bytes], offset


def _sums(path: Path, lines: int, points: int, channels: int, count_type: str, offset: int):
    """The map of counts summed over channels (uint32, or float64 past its range) and the sum spectrum."""
    row = points * channels
    band = max(1, BAND_BYTES // (row * np.dtype(count_type).itemsize))
    counts = np.zeros((lines, points), np.uint64)
    total = np.zeros(channels, np.int64)
    with open(path, "rb") as f:
        for y0 in range(0, lines, band):
            rows = min(band, lines - y0)
            f.seek(offset + y0 * row * np.dtype(count_type).itemsize)
            data = np.fromfile(f, count_type, rows * row).reshape(rows, points, channels)
            counts[y0:y0 + rows] = data.sum(axis=2, dtype=np.uint64)
            total += data.sum(axis=(0, 1), dtype=np.int64)
    return counts.astype(np.uint32 if counts.max() <= np.iinfo(np.uint32).max else np.float64), total
