"""RosettaSciIO, the reader of record for the EMD formats: reading its signals, and turning its axes into
OME pixel sizes, kept calibrations and times."""
from __future__ import annotations

import logging
import math
import re
import warnings
from datetime import UTC, datetime
from pathlib import Path

import h5py

from converters.base import ConversionError, PixelSize
from converters.meta import PIXEL_SIZE_UNKNOWN, pixel_size, to_metres

log = logging.getLogger(__name__)
_SECONDS = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "μs": 1e-6, "us": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0}
_RECIPROCAL = re.compile(r"^1/|\^-1|⁻¹")  # "1/nm", "nm^-1": diffraction and FFT calibrations
_NO_UNIT = ("", "[]", "1", "dimensionless")  # what files and rsciio write for "no unit"


def read_signals(f: h5py.File, path: Path, lazy: bool = True, **options) -> list[dict]:
    """rsciio.emd's signal dicts, by default lazily (pixel data stays in the file).

    A lazy read gets our open file's id rather than its name: rsciio would otherwise leave its own
    handle open until garbage collection, and HDF5 hands a still-open file's cached state to the
    next opener of the same path. A whole read opens (and closes) its own handle: closing ours would
    close what we still read from.
    """
    from rsciio.emd import file_reader  # imported when used: rsciio pulls in dask and pint

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            signals = file_reader(f.id if lazy else str(path), lazy=lazy, **options)
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
            raise ConversionError(f"{path.name}: RosettaSciIO cannot read its layout ({type(e).__name__}: {e}); "
                                  f"the file may be damaged") from None
    for warning in caught:  # rsciio's advice to interactive users; not the researcher's concern
        log.debug("rsciio on %s: %s", path.name, warning.message)
    return signals


def has_unit(unit: str | None) -> bool:
    return unit is not None and str(unit).strip() not in _NO_UNIT


def axis_size(axes: list[dict]) -> tuple[PixelSize | None, dict[str, str], list[str]]:
    """Pixel size from the last two axes (y, x) of an rsciio signal, its kept calibration, and warnings.

    A length becomes the PixelSize. Any other calibration is no pixel size but is kept as key-values
    ("Calibration X" = "0.0123 1/nm"), so nothing is invented or lost; reciprocal space is a known
    calibration, while an unknown unit ("units1") also means "pixel size unknown".
    """
    y, x = axes[-2], axes[-1]
    kept, unknown = {}, False
    for label, axis in (("X", x), ("Y", y)):
        unit = str(axis.get("units")).replace(" ", "")
        if has_unit(axis.get("units")) and to_metres(1.0, axis["units"]) is None:
            kept[f"Calibration {label}"] = f"{float(axis['scale']):.6g} {unit}"
            unknown = unknown or not _RECIPROCAL.search(unit)
    if kept:
        return None, kept, [PIXEL_SIZE_UNKNOWN] if unknown else []
    if not (has_unit(x.get("units")) and has_unit(y.get("units"))):
        return None, {}, []
    return pixel_size(to_metres(float(x["scale"]), x["units"]), to_metres(float(y["scale"]), y["units"])), {}, []


def z_step(axis: dict) -> float | None:
    """A stack axis's step in metres, when it is a length."""
    return to_metres(float(axis["scale"]), axis["units"]) if has_unit(axis.get("units")) else None


def seconds(value, unit: str | None) -> float | None:
    """A duration in seconds, when its unit is a time unit."""
    factor = _SECONDS.get(str(unit).strip()) if unit is not None else None
    return None if factor is None else float(value) * factor


def unix_time(stamp) -> datetime | None:
    """Unix seconds as an aware UTC time; None when absent or not a plausible instant."""
    try:
        value = float(stamp)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None
