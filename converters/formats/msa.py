"""The EMSA/MSA spectral data standard (.msa, .emsa): one spectrum as text, read by rsciio.msa.

The file holds no image: the registry makes the spectrum's plot the image, with the spectrum kept as
CSV and plot. Date and time are the acquiring PC's wall clock (#DATE, #TIME), read in the facility's
zone; the standard has no microscope field (#OWNER is the software or person).
"""
from __future__ import annotations

from pathlib import Path

from converters.base import ConvertOptions, SourceFile
from converters.formats._eds import check_text_size, local_time, read_signals, spectrum_file

NAME = "EMSA/MSA spectrum"
EXTENSIONS = (".msa", ".emsa")
READERS = ("rsciio.msa",)
HELP = "a spectrum in the EMSA/MSA text standard: imported as its plot, with the spectrum as a CSV"


def identify(head: bytes, path: Path) -> bool:
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n").split(b"\n", 1)[0].upper()
    return first.startswith(b"#FORMAT") and b"EMSA" in first


def read(files: list[Path], options: ConvertOptions) -> SourceFile:
    path = files[0]
    check_text_size(path, "EMSA/MSA")
    signal = read_signals("msa", path, "EMSA/MSA")[0]
    kind = str(signal["original_metadata"].get("SIGNALTYPE") or "").strip() or "spectrum"
    return spectrum_file(path, signal, kind, local_time(signal["metadata"].get("General", {}), options.timezone),
                         lambda om: om.get("EDAX Detector"))
