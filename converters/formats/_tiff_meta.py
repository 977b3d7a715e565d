"""What a TIFF's writer says about it: the vendor calibrations RosettaSciIO's tiff reader knows (same
tags, same rules), Zeiss Atlas/Fibics, TESCAN and the JEOL/Hitachi SEM text sidecar.

A pixel size comes only from a spatial calibration the writer meant as one: never from the 72 dpi
default or a unitless resolution, never from a time or wavelength axis.
"""
from __future__ import annotations

import configparser
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from xml.etree import ElementTree

import tifffile

from converters.formats._rsciio import seconds
from converters.formats._tiff import tiff_datetime
from converters.meta import calibration, clean, flatten, localize, to_metres

FIBICS_TAG, TESCAN_TAG = 51023, 50431
MAX_TEXT = 4 * 2**20  # a sidecar or metadata text larger than this is not metadata


@dataclass
class Described:
    writer: str | None = None  # "ImageJ", "TESCAN"...; None: a writer we do not recognise
    x: tuple[float, str] | None = None  # (scale, unit) of a pixel
    y: tuple[float, str] | None = None
    z: tuple[float, str] | None = None  # of a stack's third axis: a length, or a time
    acquired: datetime | None = None
    microscope: str | None = None
    detector: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what a researcher must check


def describe(tif: tifffile.TiffFile, files: list[Path], zone: tzinfo) -> Described:
    page = tif.pages.first
    try:
        found = _vendor(tif, page.tags, files, zone) or Described()
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, ZeroDivisionError, OverflowError,
            UnicodeError, configparser.Error) as e:  # fields of unexpected type or shape in a damaged block
        found = Described("a vendor block it could not read", warnings=[f"its vendor metadata could not be read ({type(e).__name__}: {e}): "
                                                f"imported without it"])
    found.acquired = found.acquired or _written(page, zone)
    found.microscope = found.microscope or clean(_tag(page.tags, 272)) or None
    found.metadata = {**_baseline(page.tags), **found.metadata}
    return found


def _vendor(tif: tifffile.TiffFile, tags, files: list[Path], zone: tzinfo) -> Described | None:
    """What the writer says, from the first vendor block found (None: a writer we do not recognise)."""
    sidecars = {p.suffix.lower(): p for p in files[1:]}
    if FIBICS_TAG in tags:
        return _fibics(tags[FIBICS_TAG].value, files[0])
    if TESCAN_TAG in tags or ".hdr" in sidecars:
        text = tags[TESCAN_TAG].value if TESCAN_TAG in tags else _text(sidecars[".hdr"])
        return _tescan(text, files[0], zone)
    if ".txt" in sidecars:
        return _sem_text(_text(sidecars[".txt"]), tif.pages.first.imagewidth, zone)
    if clean(_tag(tags, 271)) == "JEOL Ltd." and "<TemReporter" in _tag(tags, 270):
        return _sightx(tags, files[0])
    if tif.is_tvips:
        return _tvips(tif.tvips_metadata or {})
    if tif.is_sis:
        sis = tif.sis_metadata or {}
        return Described("Olympus SIS", x=(float(sis.get("pixelsizex", 0)), "m"),
                         y=(float(sis.get("pixelsizey", 0)), "m"), metadata=flatten(sis))
    if _tag(tags, 315).startswith("Copyright Hamamatsu") and _tag(tags, 305).startswith("HPD-TA"):
        return Described("Hamamatsu HPD-TA", metadata=_streak(_tag(tags, 270)),
                         notes=["streak image: its axes are time and wavelength, not lengths: no pixel size"])
    if 65009 in tags or 65003 in tags:
        return _dm(tags)
    if tif.is_imagej:
        return _imagej(tif.imagej_metadata or {}, tags)
    return None


def _tag(tags, code: int) -> str:
    tag = tags.get(code)
    return tag.value if tag is not None and isinstance(tag.value, str) else ""


def _text(path: Path) -> str:
    if path.stat().st_size > MAX_TEXT:
        raise ValueError(f"{path.name} is {path.stat().st_size} bytes: too large for a metadata file")
    return path.read_bytes().decode("utf-8", errors="replace")


def _written(page, zone: tzinfo) -> datetime | None:
    found = tiff_datetime(page, zone)
    text = clean(page.tags[306].value) if 306 in page.tags else ""
    if found is None and re.fullmatch(r"\d{4}/\d\d/\d\d \d\d:\d\d", text):  # JEOL writes 2019/11/27 16:11
        found = localize(datetime.strptime(text, "%Y/%m/%d %H:%M"), zone)
    return found


def _baseline(tags) -> dict[str, str]:
    """The standard tags that describe the image (not its layout)."""
    names = {271: "Make", 272: "Model", 305: "Software", 306: "DateTime", 315: "Artist", 316: "HostComputer"}
    out = {f"TIFF {name}": clean(tags[code].value) for code, name in names.items() if code in tags}
    x = tags[282].value if 282 in tags else None
    if isinstance(x, tuple) and len(x) == 2 and x[1] and 296 in tags:
        code = tags[296].value
        unit = {1: "(no unit)", 2: "inch", 3: "centimetre"}.get(code if isinstance(code, int) else 0, str(code))
        out["TIFF resolution (not a pixel size)"] = f"{x[0] / x[1]:.6g} per {unit}"
    return out


def _fibics(xml, path: Path) -> Described:
    """Zeiss Atlas/Fibics: XML in tag 51023; the scan vectors U (along X) and V (along Y) in µm per pixel."""
    text = xml.decode("utf-8", "replace") if isinstance(xml, bytes) else str(xml)
    try:
        root = ElementTree.fromstring(text.strip("\x00 \r\n"))
    except ElementTree.ParseError as e:
        raise ValueError(f"{path.name}: the Fibics XML (tag 51023) cannot be read ({e})") from None
    values = {el.tag: clean(el.text or "") for el in root.iter()}
    metadata = {".".join(p): v for p, v in _paths(root)}

    def number(key: str) -> float:
        try:
            return float(values.get(key, ""))
        except ValueError:
            return math.nan

    x = math.hypot(number("Ux"), number("Uy"))
    y = math.hypot(number("Vx"), number("Vy"))
    return Described("Zeiss Atlas/Fibics", x=(x, "µm"), y=(y if y > 0 else x, "µm"),
                     microscope=values.get("Machine") or None, detector=values.get("Detector") or None,
                     metadata=metadata)


def _paths(element, prefix=()):
    for child in element:
        path = (*prefix, child.tag)
        if len(child):
            yield from _paths(child, path)
        else:
            yield path, clean(child.text or "")


def _ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # keys keep their case
    parser.read_string(text)
    return parser


def _tescan(text, path: Path, zone: tzinfo) -> Described:
    """TESCAN: INI text ([MAIN] Device, Date, Time, PixelSizeX/Y in metres) in tag 50431 or a .hdr file."""
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    try:
        ini = _ini(text.strip("\x00"))
    except configparser.Error as e:
        raise ValueError(f"{path.name}: the TESCAN metadata cannot be read ({e.message})") from None
    main = ini["MAIN"] if ini.has_section("MAIN") else {}
    acquired = _local(main.get("Date"), main.get("Time"), "%Y-%m-%d %H:%M:%S", zone)
    return Described("TESCAN", x=_number(main.get("PixelSizeX"), "m"), y=_number(main.get("PixelSizeY"), "m"),
                     acquired=acquired, microscope=clean(main.get("Device", "")) or None,
                     detector=clean(main.get("Detector", "")) or None,
                     metadata={f"{s}.{k}": clean(v) for s in ini.sections() for k, v in ini[s].items()})


def _local(date: str | None, time: str | None, form: str, zone: tzinfo) -> datetime | None:
    """A date and a time of the instrument PC's clock, in the facility's zone; None when absent or unreadable."""
    try:
        return localize(datetime.strptime(f"{date} {time}", form), zone)
    except ValueError:
        return None


def _number(value, unit: str) -> tuple[float, str] | None:
    try:
        return float(value), unit
    except (TypeError, ValueError):
        return None


_MARKER = re.compile(r"^\s*([\d.]+)\s*([a-zµμ]+)\s*$", re.IGNORECASE)


def _sem_text(text: str, width: int, zone: tzinfo) -> Described:
    """The .txt a JEOL SEM ($CM_ keys) or a Hitachi SEM (INI, [SemImageFile]) writes beside its TIFF."""
    if "[SemImageFile]" in text:
        image = _ini(text)["SemImageFile"]
        when = _local(image.get("Date"), image.get("Time"), "%Y/%m/%d %H:%M:%S", zone)
        return Described("Hitachi SEM", x=_number(image.get("PixelSize"), "nm"), y=_number(image.get("PixelSize"), "nm"),
                         acquired=when, microscope=clean(image.get("InstructName", "")) or None,
                         metadata={k: clean(v) for k, v in image.items()})
    keys = {}
    for line in text.splitlines():
        match = re.match(r"^\$+(\w+)\s*(.*)$", line.strip())
        if match:
            keys.setdefault(match[1], clean(match[2]))
    if "CM_FORMAT" not in keys and "CM_INSTRUMENT" not in keys:
        return Described(notes=["the .txt beside the image is not a JEOL or Hitachi SEM metadata file: not read"])
    when = _local(keys.get("CM_DATE"), keys.get("CM_TIME"), "%Y/%m/%d %H:%M:%S", zone)
    x = None
    marker = _MARKER.match(keys.get("SM_MICRON_MARKER", keys.get("CM_MICRON_MARKER", "")))
    bar = _number(keys.get("SM_MICRON_BAR", keys.get("CM_MICRON_BAR")), "")
    full = keys.get("CM_FULL_SIZE", "").split()
    if marker and bar and bar[0] > 0:
        # the scale bar: `marker` long, `bar` pixels of the full-size frame the SEM scanned
        scale = (int(full[0]) / width) if full and full[0].isdigit() and width else 1.0
        x = (float(marker[1]) / bar[0] * scale, marker[2].replace("u", "µ"))
    return Described("JEOL SEM", x=x, y=x, acquired=when, microscope=keys.get("CM_INSTRUMENT") or None,
                     detector=keys.get("CM_SIGNAL") or None, metadata=keys)


def _sightx(tags, path: Path) -> Described:
    """JEOL SightX (TEM): XML TemReporter in the description; a MAG image's pixel is the resolution
    tag divided by the magnification, as rsciio reads it (a DIFF image's calibration is reciprocal)."""
    try:
        root = ElementTree.fromstring("".join(line.strip(" \r\n\t\x01\x00") for line in _tag(tags, 270).split("\n")))
    except ElementTree.ParseError as e:
        raise ValueError(f"{path.name}: the JEOL SightX XML cannot be read ({e})") from None
    metadata = {".".join(p): v for p, v in _paths(root)}
    found = Described("JEOL SightX", metadata=metadata)
    mode, eos = metadata.get("ImageFormingSystem.ModeString"), metadata.get("Eos.EosMode")
    resolution = tags[282].value if 282 in tags else None
    if eos == "eosTEM" and mode == "MAG" and resolution and resolution[0]:
        per_unit = 0.0254 if tags[296].value == tifffile.RESUNIT.INCH else 0.01  # metres per inch or cm
        mag = float(metadata.get("ImageFormingSystem.SelectorValue", "nan"))
        found.x = found.y = (resolution[1] / resolution[0] * per_unit / mag, "m")
    stamp = metadata.get("DateTime", "")
    try:
        found.acquired = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", stamp))
    except ValueError:
        pass
    return found


def _tvips(tvips: dict) -> Described:
    x, y = tvips.get("PixelSizeX"), tvips.get("PixelSizeY")
    return Described("TVIPS", x=_number(x, "nm"), y=_number(y, "nm"), metadata=flatten(tvips))


def _streak(description: str) -> dict[str, str]:
    """The HPD-TA description: lines of `[Section],key=value,...`."""
    out = {}
    for line in description.splitlines():
        section, _, rest = line.partition(",")
        for key, value in re.findall(r'(\w[\w ]*?)=("[^"]*"|[^,]*)', rest):
            out[f"{section.strip('[] ')}.{key}"] = clean(value.strip('"'))
    return out


def _dm(tags) -> Described:
    """A DigitalMicrograph export: scale and unit of X (65009, 65003), Y (65010, 65004) and the third axis
    (65011, 65005), in the order DigitalMicrograph and RosettaSciIO's writer use."""
    def axis(scale: int, unit: int):
        value = tags[scale].value if scale in tags else None
        return None if value is None else (float(value), clean(_tag(tags, unit)))

    metadata = {f"DigitalMicrograph tag {code}": clean(tags[code].value) for code in range(65000, 65030)
                if code in tags and not isinstance(tags[code].value, bytes)}
    return Described("DigitalMicrograph", x=axis(65009, 65003), y=axis(65010, 65004), z=axis(65011, 65005),
                     metadata=metadata)


def _imagej(imagej: dict, tags) -> Described:
    """ImageJ: the unit in the description, the pixel as 1 / resolution in that unit."""
    found = Described("ImageJ", metadata={f"ImageJ {k}": clean(v) for k, v in imagej.items()
                                          if isinstance(v, (str, int, float))})
    unit = clean(imagej.get("unit", ""))
    if unit and to_metres(1, unit) is not None and 282 in tags and 283 in tags:
        (xn, xd), (yn, yd) = tags[282].value, tags[283].value
        if xn and yn:
            found.x, found.y = (xd / xn, unit), (yd / yn, unit)
    return found


def calibrated(found: Described):
    """The Calibration of X and Y, the Z step in metres and the time step in seconds."""
    known = calibration(found.x or (0.0, ""), found.y or found.x or (0.0, ""))
    z_m = to_metres(*found.z) if found.z else None
    step = seconds(*found.z) if found.z else None
    return known, z_m, step
