"""EDAX (TEAM, Genesis) single spectra (.spc), read by rsciio.edax.

The header's collection date is read in the facility's zone (_eds.spc_collected); EDAX writes no
microscope name. The file holds no image: the registry makes the spectrum's plot the image, with the
spectrum kept as CSV and plot. An .spc beside its .spd map of the same stem goes with the map (edax_map).
"""
from __future__ import annotations

import math
import struct
from pathlib import Path

from converters.base import ConversionError, ConvertOptions, SourceFile
from converters.formats._eds import read_signals, spc_collected, spectrum_file

NAME = "EDAX spectrum"
EXTENSIONS = (".spc",)
READERS = ("rsciio.edax",)
HELP = "an EDS spectrum: imported as its plot, with the spectrum as a CSV"
HEADER_BYTES = 40  # version, dates, file size, data start, channel count
MAX_CHANNELS = 2**20


def identify(head: bytes, path: Path) -> bool:
    """No magic number: a format version and channel layout that make sense."""
    if len(head) < HEADER_BYTES:
        return False
    version, = struct.unpack_from("<f", head)
    start, channels = struct.unpack_from("<iH", head, 28)
    return math.isfinite(version) and 0.1 <= version < 10 and 0 < channels and HEADER_BYTES <= start < 2**20


def read(files: list[Path], options: ConvertOptions) -> SourceFile:
    path = files[0]
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES:
        raise ConversionError(f"{path.name} is truncated: an EDAX .spc header is longer than its {size} bytes")
    start, channels = struct.unpack_from("<iH", head, 28)
    if start + 4 * channels > size:
        raise ConversionError(f"{path.name} is truncated: its header says {channels} channels from byte {start} "
                              f"({start + 4 * channels} bytes), the file holds {size}")
    signal = read_signals("edax", path, "EDAX .spc", load_all_spc=True)[0]
    return spectrum_file(path, signal, "EDS", spc_collected(signal["original_metadata"]["spc_header"], options.timezone))

