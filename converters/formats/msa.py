"""The EMSA/MSA spectral data standard (.msa, .emsa): one spectrum as text, read by rsciio.msa.

The file holds no image: the registry makes the spectrum's plot the image, with the spectrum kept as
CSV and plot. Date and time are the acquiring PC's wall clock (#DATE, #TIME), read in the facility's
zone; the standard has no microscope field (#OWNER is the software or person).
"""
from __future__ import annotations

import re
from pathlib import Path

from converters.base import ConversionError, ConvertOptions, SourceFile
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
    _refuse_truncated(path)
    signal = read_signals("msa", path, "EMSA/MSA")[0]
    declared, held = signal["original_metadata"].get("NPOINTS"), signal["data"].size
    if isinstance(declared, float | int) and held < declared:  # rsciio loses what it cannot parse, without a word
        raise ConversionError(f"{path.name} is damaged: its #NPOINTS says {declared:g} channels, {held} of them can be "
                              f"read")
    kind = str(signal["original_metadata"].get("SIGNALTYPE") or "").strip() or "spectrum"
    return spectrum_file(path, signal, kind, local_time(signal["metadata"].get("General", {}), options.timezone),
                         lambda om: om.get("EDAX Detector"))


def _refuse_truncated(path: Path) -> None:
    """Refuse a file that ends without #ENDOFDATA (the standard's last line) and holds fewer values than
    its #NPOINTS: cut short, it would import as a shorter spectrum, or fail inside the reader."""
    text = path.read_text("utf-8", errors="replace")
    keyword = re.compile(r"^#(\w+)[^:\n]*:[ \t]*(.*)$", re.MULTILINE)
    fields = {m[1].upper(): m for m in keyword.finditer(text)}
    if "ENDOFDATA" in fields:
        return
    body = text[fields["SPECTRUM"].end():] if "SPECTRUM" in fields else ""
    rows = [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        raise ConversionError(f"{path.name} is truncated: it ends without #ENDOFDATA, before any of its data (the "
                              f"file holds {path.stat().st_size} bytes)")
    try:
        declared = int(float(fields["NPOINTS"][2])) if "NPOINTS" in fields else 0
    except ValueError:
        return  # no count to hold it to: the reader decides
    pairs = fields["DATATYPE"][2].strip().upper() == "XY" if "DATATYPE" in fields else False
    held = len(rows) if pairs else sum(len(re.findall(r"[^,;\s]+", row)) for row in rows)
    if held < declared:
        raise ConversionError(f"{path.name} is truncated: its #NPOINTS says {declared} channels, the file holds {held} "
                              f"and ends without #ENDOFDATA")
