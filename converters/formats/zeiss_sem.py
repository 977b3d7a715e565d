"""Zeiss SmartSEM TIFF (tag 34118, CZ_SEM): one SEM image with its SmartSEM parameters.

The pixel size is RosettaSciIO's: the block's unlabelled SI pixel size (full precision, for a
1024-px display width) scaled to the image width. Its labelled, rounded forms are the fallbacks:
`ap_image_pixel_size`, else `ap_width` over the image width (`ap_pixel_size` also refers to the
1024-px display and is wrong at other widths). Palette images keep their raw indices (the palette
is the display's, not the detector's). Date and time are local to the SEM PC: `ap_date` and `ap_time`,
else the TIFF DateTime tag.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np

from converters.base import ConversionError, ConvertOptions, SourceImage
from converters.formats._tiff import has_tag, open_tiff, page_plane, tiff_datetime
from converters.meta import clean, localize, pixel_size, to_metres, unknowns

NAME = "Zeiss SEM TIFF"
EXTENSIONS = (".tif", ".tiff", ".btf")
HELP = "SmartSEM images with their metadata tag"
PRIORITY = 20
CZ_SEM = 34118
_MICROSCOPE = ("dp_sem", "sv_serial_number", "dp_column_type")


def identify(head: bytes, path: Path) -> bool:
    return has_tag(head, path, CZ_SEM)


def read(files: list[Path], options: ConvertOptions) -> SourceImage:
    path = files[0]
    with open_tiff(path) as tif:
        page = tif.pages.first
        try:
            sem = tif.sem_metadata or {}
        except (ValueError, IndexError, UnicodeError) as e:
            raise ConversionError(f"{path.name}: the SmartSEM metadata (tag 34118) is damaged ({e})") from None
        if not isinstance(sem, dict):  # tifffile hands back the raw bytes of a tag it cannot parse
            raise ConversionError(f"{path.name}: the SmartSEM metadata (tag 34118) is damaged (not parameter text)")
        plane = page_plane(path, page)
        photometric = page.photometric
        written = tiff_datetime(page, options.timezone)
    ny, nx = plane.shape
    notes = []
    if photometric == 3:
        notes.append("palette image: raw pixel indices kept, the display palette is not applied")

    size = _si_pixel_size(sem.get(""), nx) or _length(sem.get("ap_image_pixel_size"))
    if size is None:
        width = _length(sem.get("ap_width"))
        size = width / nx if width else None
    acquired = None
    date, time = _value(sem.get("ap_date")), _value(sem.get("ap_time"))
    if date and time:
        try:
            acquired = localize(datetime.strptime(f"{date} {time}", "%d %b %Y %H:%M:%S"), options.timezone)
        except ValueError:
            notes.append(f"acquisition date {date} {time} could not be read")
    acquired = acquired or written
    # the SEM's model, else its serial number ("Merlin-61-08", which names the model too), else the
    # column type (last: a GeminiSEM 450 here calls its column "Merlin")
    microscope = next((_value(sem.get(key)) for key in _MICROSCOPE if _value(sem.get(key))), None)
    detector = _value(sem.get("dp_detector_type")) or _value(sem.get("dp_detector_channel"))
    return SourceImage(
        shape={"T": 1, "C": 1, "Z": 1, "Y": ny, "X": nx}, dtype=np.dtype(plane.dtype),
        planes=lambda: iter([plane]), channels=[detector or "SEM"], pixel_size=pixel_size(size),
        acquired=acquired, microscope=microscope, detector=detector or None,
        metadata=_metadata(sem), notes=notes, warnings=unknowns(acquired, microscope, pixel_size(size) is not None),
    )


def _value(entry) -> str:
    if isinstance(entry, tuple) and len(entry) >= 2:
        return clean(entry[1])
    return clean(entry) if isinstance(entry, str) else ""


def _si_pixel_size(block, width: int) -> float | None:
    """Metres per pixel from the unlabelled block (value 3, for 1024 px), as rsciio reads it."""
    try:
        metres = float(block[3]) * 1024 / width
    except (TypeError, ValueError, IndexError):
        return None
    return metres if 0 < metres < 1 else None  # not a length an SEM pixel can have: unknown


def _length(entry) -> float | None:
    """Metres from a SmartSEM (label, value, unit) entry; None when zero, negative or unitless."""
    if not isinstance(entry, tuple) or len(entry) < 3:
        return None
    try:
        metres = to_metres(float(entry[1]), str(entry[2]))
    except (TypeError, ValueError):
        return None
    return metres if metres and metres > 0 else None


def _metadata(sem: dict) -> dict[str, str]:
    """Each parameter under its SmartSEM label ("Image Pixel Size": "4.99 nm")."""
    out = {}
    for key, entry in sem.items():
        if isinstance(entry, tuple) and entry:
            label = clean(entry[0]) or key
            value = " ".join(clean(x) for x in entry[1:] if clean(x))
        else:
            label, value = key, clean(entry)
        if not label:
            continue
        out[label if label not in out else f"{label} ({key})"] = value
    return out
