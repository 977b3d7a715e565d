"""EDS and other spectrum files read through RosettaSciIO (rsciio.bruker, rsciio.edax, rsciio.msa).

RosettaSciIO is the reader of record: its energy axis (offset, scale, unit), its title and its date.
A file that holds only a spectrum becomes a SourceFile without images: the registry makes the
spectrum's plot its image, as it does for Velox spectra.
"""
from __future__ import annotations

import importlib
import logging
import re
import struct
import warnings
from collections.abc import Callable
from datetime import datetime, tzinfo
from pathlib import Path

import numpy as np

from converters.base import Accounted, ConversionError, SourceFile, Spectrum
from converters.formats._rsciio import has_unit
from converters.meta import clean, flatten, localize

log = logging.getLogger(__name__)
MAX_TEXT_BYTES = 64 * 2**20  # a text spectrum (MSA, SPX) of 64 MB would hold millions of channels
_ENERGY = re.compile(r"\b(k?ev)\b", re.IGNORECASE)  # "Energy (EV)", "keV", "eV"


def read_signals(module: str, path: Path, what: str, **options) -> list[dict]:
    """`rsciio.<module>.file_reader(path)`, its failures as one message naming the file and the format."""
    reader = importlib.import_module(f"rsciio.{module}").file_reader
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            signals = reader(str(path), **options)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, EOFError, OSError, UnicodeError,
                NotImplementedError, ZeroDivisionError, struct.error) as e:
            raise ConversionError(f"{path.name} is not a readable {what} file ({type(e).__name__}: {e}); it may be "
                                  f"damaged or incomplete") from None
    for warning in caught:  # rsciio's advice to interactive users
        log.debug("rsciio on %s: %s", path.name, warning.message)
    if not signals:
        raise ConversionError(f"{path.name}: RosettaSciIO finds no data in this {what} file")
    return signals


def check_text_size(path: Path, what: str) -> None:
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise ConversionError(f"{path.name} is too large for a {what} file ({size} bytes)")


def energy_unit(unit: object) -> str:
    """The axis unit as OME and a plot read it: "Energy (EV)" is eV; another known unit stays; none is ""."""
    if not has_unit(unit):
        return ""
    match = _ENERGY.search(str(unit))
    if match:
        return "keV" if match[1].lower() == "kev" else "eV"
    return clean(unit)


def spectrum(signal: dict, title: str, source: str, counts: np.ndarray | None = None) -> Spectrum:
    """A Spectrum from an rsciio signal whose last axis is the energy (counts: a sum already made)."""
    axis = signal["axes"][-1]
    unit = energy_unit(axis.get("units"))
    values = np.asarray(signal["data"] if counts is None else counts).reshape(-1)
    if values.size != int(axis["size"]):
        raise ConversionError(f"{source}: {values.size} counts for {axis['size']} channels")
    return Spectrum(title, values, float(axis["offset"]) if unit else 0.0, float(axis["scale"]) if unit else 1.0,
                    unit, source)


def local_time(general: dict, zone: tzinfo) -> datetime | None:
    """rsciio's General.date and .time (ISO text, the acquiring PC's wall clock) in the facility's zone."""
    date, time = general.get("date"), general.get("time") or "00:00:00"
    if not date:
        return None
    try:
        return localize(datetime.fromisoformat(f"{date}T{time}"), zone)
    except ValueError:
        return None


def spc_collected(header: dict, zone: tzinfo) -> datetime | None:
    """An EDAX .spc header's collection date (year, month, day, hour, minute, second: the acquiring PC's
    wall clock) in the facility's zone."""
    try:
        return localize(datetime(int(header["collectDateYear"]), int(header["collectDateMon"]),
                                 int(header["collectDateDay"]), int(header["collectTimeHour"]),
                                 int(header["collectTimeMin"]), int(header["collectTimeSec"])), zone)
    except (KeyError, ValueError, TypeError):
        return None  # not written (zeros) or out of range


def spectrum_file(path: Path, signal: dict, kind: str, acquired: datetime | None,
                  detector: Callable[[dict], str | None] = lambda om: None) -> SourceFile:
    """A file that holds one spectrum: the spectrum, its facts and its metadata (the registry plots it)."""
    title = f"{kind} {detector(signal['original_metadata']) or ''}".strip()
    found = spectrum(signal, title, f"spectrum {title}")
    metadata = flatten(signal["original_metadata"])
    if found.unit:
        metadata.update({"Energy offset": f"{found.offset:.6g} {found.unit}",
                         "Energy per channel": f"{found.scale:.6g} {found.unit}"})
    return SourceFile([], [found], [Accounted(f"spectrum {title}", "attachment", f"{title} spectrum (CSV and plot)")],
                      acquired=acquired, microscope=None, metadata=metadata)
