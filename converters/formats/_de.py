"""Direct Electron (DE) cameras: the `<prefix>_info.txt` sidecar of their MRC files.

DE's server writes `<prefix>_movie.mrc` (every frame; a 4D-STEM scan's diffraction patterns), a
`<prefix>_final.mrc` (their sum) and virtual images (`<prefix>_<n>_<name>_<calculation>.mrc`, made
from a scan), with one `<prefix>_info.txt` of "key = value" lines, which goes with the movie. The keys and what
they mean are RosettaSciIO's (rsciio/mrc/_api.py, read_de_metadata_file and find_related_de_files):
"Timestamp (seconds since Epoch)", "Specimen Pixel Size X (nanometers)", "Diffraction Pixel Size X"
(1/nm), "Camera Model", -1 for "not set". A DE file names its camera, not the microscope: the camera
is the instrument (staff map its name to the microscope's Project name).

In a scan, the movie's frames and their _final sum are diffraction patterns (reciprocal space), while
virtual and external-detector images (`<prefix>_[virt]<n>_<name>_<calculation>.mrc`, `<prefix>_ext<n>[_<name>].mrc`,
rsciio's VIRTUAL_RE and ext_re) hold one value per scan point: their pixel is the scan's step.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from converters.base import ConversionError, PixelSize
from converters.formats._rsciio import unix_time
from converters.meta import clean, pixel_size

SUFFIX = "_info.txt"
MAX_INFO_BYTES = 4 * 2**20  # real ones are about 24 KB
# what follows "<prefix>_" in the name of an image of the scan (one value per scan point)
_SCAN_IMAGE = re.compile(r"(?:.+?_)?(?:(?:\d+|virt\d+)_[^_]+_[^.]+|ext\d+(?:_[^.]+)?)\.mrc", re.IGNORECASE)
_MARKERS = (b"Timestamp (seconds since Epoch)", b"Server Software Version", b"Camera Model")


@dataclass
class DeInfo:
    acquired: datetime | None = None
    camera: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    specimen: PixelSize | None = None  # a TEM image's pixel (in a scan: the scan's step)
    diffraction: dict[str, str] = field(default_factory=dict)  # {"Calibration X": "0.01 1/nm"}
    diffracting: bool = False  # the frames are diffraction patterns (STEM scan or a camera length)
    frame_seconds: float | None = None
    prefix: str = ""  # the acquisition's, from the info file's name ("20250429_06699")
    warnings: list[str] = field(default_factory=list)

    def scan_image(self, name: str) -> bool:
        """Whether the MRC named so is a virtual or external image of this acquisition's scan."""
        head = f"{self.prefix}_".lower()
        tail = name[len(head):] if name.lower().startswith(head) else ""
        return bool(_SCAN_IMAGE.fullmatch(tail)) and not tail.lower().endswith("_movie.mrc")


def is_info(head: bytes) -> bool:
    """A DE info file: "key = value" lines with at least one of DE's own keys near the top."""
    text = head[:4096]
    return any(marker in text for marker in _MARKERS) and b" = " in text and b"\x00" not in text


def read_info(path: Path) -> DeInfo:
    size = path.stat().st_size
    if size > MAX_INFO_BYTES:
        raise ConversionError(f"{path.name} is too large for a Direct Electron info file ({size} bytes)")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise ConversionError(f"{path.name} cannot be read: {e}") from None
    pairs = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and clean(key):
            pairs[clean(key)] = clean(value)
    if not any(marker.decode() in pairs for marker in _MARKERS):
        raise ConversionError(f"{path.name} is not a Direct Electron info file (no 'Timestamp (seconds since "
                              f"Epoch)', 'Server Software Version' or 'Camera Model' line)")
    name = path.name
    info = DeInfo(metadata={f"DE.{k}": v for k, v in pairs.items()},
                  prefix=name[: -len(SUFFIX)] if name.lower().endswith(SUFFIX) else path.stem)
    if not text.endswith("\n"):  # DE ends every line: a copy cut short ends inside one
        info.warnings.append(f"{path.name} ends inside a line: it may be cut short, and what followed is missing")
    info.acquired = unix_time(pairs.get("Timestamp (seconds since Epoch)"))
    info.camera = pairs.get("Camera Model") or pairs.get("Camera Name") or None
    nm = [_number(pairs.get(f"Specimen Pixel Size {a} (nanometers)")) for a in "XY"]
    info.specimen = pixel_size(*(v * 1e-9 if v is not None else None for v in nm))
    recip = [_number(pairs.get(f"Diffraction Pixel Size {a}")) for a in "XY"]
    if all(v is not None and v > 0 for v in recip):
        info.diffraction = {f"Calibration {a}": f"{v:.6g} 1/nm" for a, v in zip("XY", recip)}
    # as rsciio decides: STEM when the mode says so (or, unset, when scanning); diffraction in STEM or
    # whenever a camera length is set
    mode = _number(pairs.get("Instrument Project TEMorSTEM Mode"))
    stem = pairs.get("Scan - Enable") == "Enable" if mode in (None, -1) else mode != 0
    camera_length = _number(pairs.get("Instrument Project Camera Length (centimeters)"))
    info.diffracting = stem or (camera_length is not None and camera_length != -1)
    fps, summed = _number(pairs.get("Frames Per Second")), _number(pairs.get("Autosave Movie Sum Count")) or 1
    info.frame_seconds = summed / fps if fps and fps > 0 and summed > 0 else None
    return info


def _number(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None
