"""Thermo Fisher / FEI SEM TIFF (tags 34680 FEI_SFEG, 34682 FEI_HELIOS).

The bottom `PrivateFei.DatabarHeight` rows are the data bar burnt into the image: they are cropped.
Date and time are local to the SEM PC: `User.Date` and `User.Time` (12-hour form with AM/PM, which
Bio-Formats drops), else the TIFF DateTime tag.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np

from converters.base import ConversionError, ConvertOptions, SourceImage
from converters.formats._tiff import has_tag, open_tiff, page_plane, tiff_datetime
from converters.meta import clean, flatten, localize, pixel_size, unknowns

NAME = "Thermo Fisher/FEI SEM TIFF"
EXTENSIONS = (".tif", ".tiff", ".btf")
HELP = "SEM and FIB images with their metadata tag; the data bar is cropped"
PRIORITY = 20
FEI_TAGS = (34680, 34682)


def identify(head: bytes, path: Path) -> bool:
    return has_tag(head, path, *FEI_TAGS)


def read(files: list[Path], options: ConvertOptions) -> SourceImage:
    path = files[0]
    with open_tiff(path) as tif:
        page = tif.pages.first
        try:
            fei = tif.fei_metadata or {}
        except (ValueError, IndexError, UnicodeError) as e:
            raise ConversionError(f"{path.name}: the FEI metadata (tag 34680/34682) is damaged ({e})") from None
        height = page.imagelength
        bar = _int(fei.get("PrivateFei", {}).get("DatabarHeight"))
        if bar >= height:
            raise ConversionError(f"{path.name}: the data bar ({bar} rows) is as tall as the image ({height} rows)")
        plane = page_plane(path, page, rows=height - bar)
        written = tiff_datetime(page, options.timezone)
    ny, nx = plane.shape
    notes = [f"the data bar ({bar} rows at the bottom) was cropped"] if bar else []

    user, system = fei.get("User", {}), fei.get("System", {})
    acquired = _date(user.get("Date"), user.get("Time"), options)
    if acquired is None and user.get("Date"):
        notes.append(f"acquisition date {user.get('Date')} {user.get('Time')} could not be read")
    acquired = acquired or written
    scan = fei.get("Scan", {}) or fei.get("EScan", {})
    detectors = fei.get("Detectors", {})
    detector = clean(detectors.get("Name", "")) or None
    channel = " ".join(x for x in (detector or "", clean(detectors.get("Mode", ""))) if x) or "SEM"
    # "Helios NanoLab\" 660": the stray quote is part of how xT writes the name; without a model, the
    # system type ("DualBeam") still names the kind of instrument
    microscope = next((clean(str(system.get(key, "")).replace('"', "")) for key in ("SystemType", "Type")
                       if clean(str(system.get(key, "")))), None)
    size = pixel_size(_float(scan.get("PixelWidth")), _float(scan.get("PixelHeight")))
    return SourceImage(
        shape={"T": 1, "C": 1, "Z": 1, "Y": ny, "X": nx}, dtype=np.dtype(plane.dtype),
        planes=lambda: iter([plane]), channels=[channel], pixel_size=size,
        acquired=acquired, microscope=microscope, detector=detector,
        metadata=flatten(fei), notes=notes, warnings=unknowns(acquired, microscope, size is not None),
    )


def _date(date, time, options: ConvertOptions) -> datetime | None:
    if not date or not time:
        return None
    text = f"{clean(date)} {clean(time)}"
    for form in ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S", "%d.%m.%Y %H:%M:%S"):
        try:
            return localize(datetime.strptime(text, form), options.timezone)
        except ValueError:
            continue
    return None


def _int(value) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
