"""Metadata helpers shared by the plugins: flat key-values, lengths with OME units, names, dates."""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

from converters.base import PixelSize

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Metres per unit, for the length units OME-XML accepts plus the spellings files use for them.
_METRES = {
    "pm": 1e-12, "Å": 1e-10, "A": 1e-10, "Angstrom": 1e-10, "angstrom": 1e-10, "nm": 1e-9,
    "µm": 1e-6, "μm": 1e-6, "um": 1e-6, "micron": 1e-6, "mm": 1e-3, "cm": 1e-2, "m": 1.0,
    "meter": 1.0, "meters": 1.0, "metre": 1.0, "metres": 1.0, "\u212b": 1e-10,  # U+212B, the Ångström sign
    "nanometer": 1e-9, "nanometers": 1e-9, "micrometer": 1e-6, "micrometers": 1e-6, "microns": 1e-6,
    "picometer": 1e-12, "picometers": 1e-12, "millimeter": 1e-3, "millimeters": 1e-3,
}
# "1/nm", "1 / nm", "nm^-1", "nm-1", "nm⁻¹": a reciprocal length (diffraction, FFT), never a pixel size
_RECIPROCAL = re.compile(r"^(?:1/(?P<over>.+)|(?P<power>.+?)(?:\^-1|-1|⁻¹))$")
# What a researcher must check when the file does not say (SourceImage.warnings, word for word)
DATE_UNKNOWN, MICROSCOPE_UNKNOWN, PIXEL_SIZE_UNKNOWN = "acquisition date unknown", "microscope unknown", "pixel size unknown"
_OME_UNITS = ("pm", "nm", "µm", "mm", "m")  # the ones we write: each value lands in [1, 1000)


def clean(text: object) -> str:
    """A value as XML-safe text: control characters dropped, whitespace trimmed."""
    return _CONTROL.sub("", str(text)).strip()


def flatten(tree: object, prefix: str = "", out: dict[str, str] | None = None) -> dict[str, str]:
    """Nested dicts and lists as {"A.B.0.C": "value"}; empty values are kept as ""."""
    out = {} if out is None else out
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            flatten(value, f"{prefix}.{clean(key)}" if prefix else clean(key), out)
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            flatten(value, f"{prefix}.{i}" if prefix else str(i), out)
    else:
        out[prefix] = clean("" if tree is None else tree)
    return out


def fresh_key(name: str, taken: Mapping, seen: dict[str, int]) -> str:
    """`name`, or the first of "name (2)", "name (3)"... not in `taken`. `seen` remembers per name how far
    it got, so that N siblings of one name cost N steps, not N squared."""
    if name not in taken:
        return name
    n = seen.get(name, 1)
    while True:
        n += 1
        candidate = f"{name} ({n})"
        if candidate not in taken:
            seen[name] = n
            return candidate


def to_metres(value: float, unit: str) -> float | None:
    factor = _METRES.get(unit.strip()) if isinstance(unit, str) else None
    return None if factor is None else float(value) * factor


def per_nm(value: float, unit: str) -> float | None:
    """A reciprocal length in 1/nm ("0.5 1/Å" is 5 1/nm); None when the unit is not a reciprocal length."""
    match = _RECIPROCAL.match(unit.replace(" ", "")) if isinstance(unit, str) else None
    factor = _METRES.get(match["over"] or match["power"]) if match else None
    return None if factor is None else float(value) / factor * 1e-9


@dataclass(frozen=True)
class Calibration:
    """What an image's X and Y calibration means: a pixel size, a reciprocal calibration, or unknown."""

    pixel_size: PixelSize | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # {"Calibration X": "0.0425 1/nm"}
    known: bool = False  # a length or a reciprocal length: no "pixel size unknown" warning


def calibration(x: tuple[float, str], y: tuple[float, str]) -> Calibration:
    """Read (scale, unit) of X and Y. Lengths make a pixel size; reciprocal lengths stay key-values
    in 1/nm; any other unit (never guessed), or a zero or negative scale, is unknown and kept as given."""
    lengths = [to_metres(scale, unit) for scale, unit in (x, y)]
    if all(m is not None for m in lengths):
        size = pixel_size(*lengths)
        if size is not None:
            return Calibration(pixel_size=size, known=True)
    reciprocal = [per_nm(scale, unit) for scale, unit in (x, y)]
    if all(r is not None and _positive(r) for r in reciprocal):
        return Calibration(metadata={f"Calibration {a}": f"{r:.6g} 1/nm" for a, r in zip("XY", reciprocal)},
                           known=True)
    kept = {f"Calibration {a}": f"{scale:.6g} {clean(unit)}" for a, (scale, unit) in zip("XY", (x, y))
            if isinstance(unit, str) and clean(unit)}  # a bare scale without a unit says nothing
    return Calibration(metadata=kept)


def unknowns(acquired: datetime | None, microscope: str | None, known_calibration: bool) -> list[str]:
    """The warnings for what an image's file did not say."""
    return [text for text, missing in ((DATE_UNKNOWN, acquired is None), (MICROSCOPE_UNKNOWN, not microscope),
                                       (PIXEL_SIZE_UNKNOWN, not known_calibration)) if missing]


def from_filetime(ticks: float) -> datetime | None:
    """A Windows FILETIME (100 ns since 1601-01-01 UTC) as an aware datetime; None when out of range."""
    if not isinstance(ticks, (int, float)) or not 1e17 < ticks < 3e18:  # 1917..11107: a plausible stamp
        return None
    return datetime(1601, 1, 1, tzinfo=UTC) + timedelta(microseconds=ticks / 10)


def pixel_size(x_m: float | None, y_m: float | None = None, z_m: float | None = None) -> PixelSize | None:
    """A pixel size given in metres, in the OME unit that reads best; None when not a real size.

    Zero, negative, NaN or absent means the file does not know: never default to 1 of anything.
    """
    y_m = x_m if y_m is None else y_m
    if not all(_positive(v) for v in (x_m, y_m)):
        return None
    for unit in _OME_UNITS:
        if x_m / _METRES[unit] < 1000 or unit == "m":
            scale = _METRES[unit]
            break
    z = z_m / scale if _positive(z_m) else None
    return PixelSize(round(x_m / scale, 12), round(y_m / scale, 12), unit, None if z is None else round(z, 12))


def _positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def friendly_name(raw: str | None, names: Mapping[str, str]) -> str | None:
    """The facility's name for an instrument, or the raw name cleaned."""
    if raw is None:
        return None
    name = clean(raw)
    if not name:
        return None
    for key, friendly in names.items():
        if clean(key).casefold() == name.casefold():
            return friendly
    return name


def localize(naive: datetime, zone: tzinfo) -> datetime:
    """A local wall-clock time from an instrument PC, in the facility's time zone."""
    return naive.replace(tzinfo=zone) if naive.tzinfo is None else naive


def human_size(n: float) -> str:
    """Bytes as people read them, in the page's decimal units (static/upload/util.js)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return (f"{n:.0f} byte" + ("" if round(n) == 1 else "s")) if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
