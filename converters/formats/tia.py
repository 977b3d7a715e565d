"""TIA (FEI/Thermo TEM Imaging & Analysis): an .emi with its .ser files, _1.ser to _N.ser.

The .emi holds the metadata (one <ObjectInfo> XML per series, local time without zone), each .ser
one series of frames or spectra. Several image .ser files are the detectors of one acquisition
(channels); the frames of a series are a time axis. Frames are read straight from the .ser at their
offsets, bottom row first as TIA stores them (rsciio flips them the same way). A spectrum series is
kept as its spectrum, or its sum spectrum when it holds several (a spectrum image).

RosettaSciIO reads whole .ser files into memory, so _ser.py indexes them instead; what rsciio knows
beyond that is taken from it: whether an image is calibrated in metres or in 1/m (diffraction).
"""
from __future__ import annotations

import logging
import re
import struct
import warnings
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from converters.base import Accounted, ConversionError, ConvertOptions, SourceFile, SourceImage, Spectrum
from converters.formats._hdf5 import complex_parts
from converters.formats._ser import SPECTRUM_TYPE, Series, read_series, sum_spectrum
from converters.limits import parse_xml
from converters.meta import Calibration, calibration, clean, flatten, localize, unknowns
from converters.planes import FilePlane, FlippedPlane, FuncPlane, common_dtype

log = logging.getLogger(__name__)
NAME = "TIA EMI"
EXTENSIONS = (".emi",)
HELP = "FEI/Thermo TIA: the .emi holds the metadata, its .ser files the images and spectra"
PARTNERS = ({"name": "{stem}_{n}.ser", "what": ".ser file", "required": True},)
READERS = ("rsciio.tia._api",)
SCAN_LIMIT = 64 * 2**20  # .emi files are small; never read more than this looking for the XML
_SER_NAME = re.compile(r"^(?P<stem>.+)_(?P<index>\d+)\.ser$", re.IGNORECASE)
_STEM_DETECTOR = re.compile(rb"Acquire ([\w+-]+) Scanning Display")


def identify(head: bytes, path: Path) -> bool:
    if head.startswith(b"JK\x00\x02"):  # TIA's own signature: a cut .emi has lost its <ObjectInfo>, not its kind
        return True
    if not head.startswith(b"JK"):
        return False
    with open(path, "rb") as f:
        return b"<ObjectInfo>" in f.read(SCAN_LIMIT)


def read(files: list[Path], options: ConvertOptions) -> SourceImage | SourceFile:
    emi = files[0]
    with open(emi, "rb") as f:
        raw = f.read(SCAN_LIMIT)
    xmls = _objects(raw)
    _refuse_truncated(emi, raw, xmls)
    # an object with only an id, or one pointing at a reference image (a spectrum image's survey),
    # has no .ser of its own: the others each describe one
    described = sum(1 for xml in xmls if b"<AcquireDate>" in xml and b"<ReferenceImagePath>" not in xml)
    sers = _sers(emi, files[1:], described)
    objects = [_parse_object(xml, emi) for xml in xmls[:len(sers)]]  # only the .ser files' are read

    every = [read_series(ser) for ser in sers]
    series = [s for s in every if s.data_type != SPECTRUM_TYPE]
    spectra, accounted = [], []
    for s in every:
        if s.data_type == SPECTRUM_TYPE:
            spectrum, row = _spectrum(s)
            spectra.append(spectrum)
            accounted.append(row)
    # the first ObjectInfo describes the acquisition: its date and microscope, for every series
    info = objects[0] if objects else {}
    notes: list[str] = []
    acquired = _acquired((series or every)[0], info, options, notes)
    microscope = info.get("ExperimentalDescription", {}).get("Microscope", "").split(" (")[0] or None
    metadata = flatten(info)
    for s in every:
        metadata.update({f"{s.path.name}.{k}": v for k, v in s.header.items()})
    if not series:
        return SourceFile(images=[], spectra=spectra, accounted=accounted, acquired=acquired, microscope=microscope,
                          metadata=metadata)
    image, names = _image(raw, xmls, objects, sers, series, acquired=acquired, microscope=microscope,
                          metadata=metadata, notes=notes)
    accounted = [Accounted(f"image series {s.path.name}", "channel" if len(series) > 1 else "image", name)
                 for s, name in zip(series, names)] + accounted
    if not spectra:
        return image
    return SourceFile(images=[image], spectra=spectra, accounted=accounted)


def _objects(raw: bytes) -> list[bytes]:
    """Each <ObjectInfo>...</ObjectInfo> in the .emi, found in one pass: a regular expression would
    look for the end again from every unclosed start, in time quadratic in the file's size."""
    found, at = [], 0
    while (start := raw.find(b"<ObjectInfo>", at)) >= 0:
        end = raw.find(b"</ObjectInfo>", start)
        if end < 0:
            break
        at = end + len(b"</ObjectInfo>")
        found.append(raw[start:at])
    return found


def _refuse_truncated(emi: Path, raw: bytes, xmls: list[bytes]) -> None:
    """TIA writes the metadata (an <ObjectInfo> per series) at the end of the .emi: a cut file loses it."""
    if len(raw) == SCAN_LIMIT:
        return  # the file goes on beyond what was read
    last = raw.rfind(b"</ObjectInfo>")
    cut = raw.find(b"<ObjectInfo>", max(last, 0))
    if cut >= 0:
        raise ConversionError(f"{emi.name} is truncated: its metadata XML (<ObjectInfo> from byte {cut}) is cut off "
                              f"where the file ends, at byte {len(raw)}")
    if not xmls:
        raise ConversionError(f"{emi.name} is truncated or damaged: it holds none of the metadata XML (<ObjectInfo>) "
                              f"TIA writes at its end (the file holds {len(raw)} bytes)")


def _spectrum(s: Series) -> tuple[Spectrum, Accounted]:
    """A single spectrum as it is; a spectrum image or series as its sum, the rest kept in the .ser."""
    if s.frames == 1:
        kind = "spectrum"
        row = Accounted(f"{kind} {s.path.name}", "attachment", "spectrum (CSV and plot)")
    else:
        kind = "spectrum image" if int(s.header["NumberDimensions"]) >= 2 else "spectrum series"
        row = Accounted(f"{kind} {s.path.name}", "not kept",
                        f"kept in the original file; its sum spectrum is attached ({s.frames} spectra of "
                        f"{s.shape[1]} channels)")
    title = "Spectrum" if s.frames == 1 else f"Spectrum (sum of the {kind})"
    # TIA calibrates energy in eV (RosettaSciIO reads it so too)
    return Spectrum(title=title, counts=sum_spectrum(s), offset=s.energy[0], scale=s.energy[1], unit="eV",
                    source=f"{kind} {s.path.name}"), row


def _image(raw: bytes, xmls: list[bytes], objects: list[dict], sers: list[Path], series: list[Series],
           *, acquired: datetime | None, microscope: str | None, metadata: dict[str, str],
           notes: list[str]) -> tuple[SourceImage, list[str]]:
    first = series[0]
    for s in series[1:]:
        if (s.frames, s.shape) != (first.frames, first.shape):
            raise ConversionError(
                f"{s.path.name} has {s.frames} frames of {s.shape[1]}x{s.shape[0]} but {first.path.name} has "
                f"{first.frames} of {first.shape[1]}x{first.shape[0]}; the detectors of one acquisition must match"
            )

    names = _channel_names(raw, series, objects)
    channels, readers, dtypes = [], [], []
    for s, name in zip(series, names):
        if s.dtype.kind == "c":
            dtype, _, _ = complex_parts(lambda y0, y1: None, s.dtype)
            channels += [f"{name} amplitude", f"{name} phase"]
            readers += [(s, "amplitude"), (s, "phase")]
            dtypes += [dtype, dtype]
        else:
            channels.append(name)
            readers.append((s, "real"))
            dtypes.append(s.dtype.newbyteorder("="))
    dtype = common_dtype(dtypes)
    ny, nx = first.shape

    def planes():
        for t in range(first.frames):
            for s, how in readers:
                # TIA stores the bottom row first
                plane = FlippedPlane(FilePlane(s.path, s.offsets[t], s.shape, s.dtype))
                if how == "real":
                    yield FuncPlane(s.shape, dtype, plane.rows)
                else:
                    _, amplitude, phase = complex_parts(plane.rows, s.dtype)
                    yield FuncPlane(s.shape, dtype, amplitude if how == "amplitude" else phase)

    index = sers.index(first.path)
    unit = _unit(xmls[index] if index < len(xmls) else None, first.path)
    cal = calibration((first.delta[0], unit), (first.delta[1], unit)) if unit else Calibration()
    metadata.update(cal.metadata)
    camera = _deep(objects[0], "CameraNamePath") if objects else None
    return SourceImage(
        shape={"T": first.frames, "C": len(channels), "Z": 1, "Y": ny, "X": nx}, dtype=np.dtype(dtype),
        planes=planes, channels=channels, pixel_size=cal.pixel_size, acquired=acquired, microscope=microscope,
        detector=camera or (", ".join(names) if len(series) > 1 else None),
        channel_detectors=[camera] * len(channels) if camera else [],
        metadata=metadata, notes=notes, warnings=unknowns(acquired, microscope, cal.known),
    ), names


def _acquired(first: Series, info: dict, options: ConvertOptions, notes: list[str]) -> datetime | None:
    """The acquisition time from, in order: the first frame's time tag in the .ser (Unix seconds, UTC,
    whatever zone the TIA PC was set to), then the .emi's AcquireDate (the PC's wall clock, read in the
    facility's zone)."""
    if first.time and first.time > 10**8:  # after 1973: a set clock
        return datetime.fromtimestamp(first.time, UTC)
    if info.get("AcquireDate"):
        try:
            return localize(datetime.strptime(info["AcquireDate"], "%a %b %d %H:%M:%S %Y"), options.timezone)
        except ValueError:
            notes.append(f"acquisition date {info['AcquireDate']!r} could not be read")
    return None


def _unit(object_xml: bytes | None, ser: Path) -> str | None:
    """ "m" or "1/m" for a series' image calibration, by RosettaSciIO's rule (diffraction mode, or a camera
    in STEM, is reciprocal space); None when rsciio can only guess (it warns then) or cannot read it."""
    from rsciio.tia._api import _guess_units_from_mode, convert_xml_to_dict, get_header_dtype_list

    if object_xml is None:
        return None
    try:
        with open(ser, "rb") as f:
            layout = np.dtype(get_header_dtype_list(f))  # the header's dimension records, not the data
            if layout.itemsize > ser.stat().st_size:
                return None
            header = np.fromfile(f, dtype=layout, count=1)
        with warnings.catch_warnings(record=True) as guessed:
            warnings.simplefilter("always")
            units = _guess_units_from_mode(convert_xml_to_dict(object_xml.decode("utf-8", "replace")), header)
    except (IndexError, ValueError, TypeError, KeyError, AttributeError, OSError, ET.ParseError, struct.error) as e:
        log.debug("rsciio cannot tell the calibration unit of %s: %s", ser.name, e)
        return None
    if guessed:
        return None
    return {"meters": "m", "1/meters": "1/m"}.get(units)


def _sers(emi: Path, given: list[Path], expected: int) -> list[Path]:
    """The .ser files of this .emi in index order; refuse when one it describes is missing."""
    stem = emi.stem
    indexed = {}
    for path in given:
        match = _SER_NAME.match(path.name)
        if not match or match["stem"].lower() != stem.lower():
            raise ConversionError(f"{path.name} does not belong to {emi.name} (expected {stem}_<n>.ser)")
        indexed[int(match["index"])] = path
    wanted = range(1, max([expected, *indexed]) + 1)
    missing = [f"{stem}_{i}.ser" for i in wanted if i not in indexed]
    if not indexed:
        raise ConversionError(f"{emi.name} has no .ser file: expected {stem}_1.ser beside it")
    if missing:
        more = f" and {len(missing) - 5:,} more" if len(missing) > 5 else ""
        raise ConversionError(f"{emi.name} is incomplete: {', '.join(missing[:5])}{more} "
                              f"{'is' if len(missing) == 1 else 'are'} missing")
    return [indexed[i] for i in sorted(indexed)]


def _parse_object(xml: bytes, emi: Path) -> dict:
    try:
        root = parse_xml(xml.decode("utf-8", errors="replace"), emi.name)
    except ET.ParseError as e:
        raise ConversionError(f"{emi.name}: its metadata XML is damaged ({e})") from None
    return _tree(root)


def _tree(element: ET.Element) -> dict | str:
    if element.tag == "ExperimentalDescription":
        # <Data><Label>High tension</Label><Value>200</Value><Unit>kV</Unit></Data> as "200 kV"
        out = {}
        for data in element.iter("Data"):
            label = clean(data.findtext("Label", ""))
            value = " ".join(x for x in (clean(data.findtext("Value", "")), clean(data.findtext("Unit", ""))) if x)
            if label:
                out[label] = value
        return out
    if len(element) == 0:
        return clean(element.text or "")
    out = {}
    for child in element:
        out[child.tag if child.tag not in out else f"{child.tag}.{len(out)}"] = _tree(child)
    return out


def _channel_names(raw: bytes, series, objects: list[dict]) -> list[str]:
    """STEM detector names from the .emi's display names, else the camera, else the .ser name."""
    detectors = [d.decode("ascii", "replace") for d in _STEM_DETECTOR.findall(raw)]
    detectors = list(dict.fromkeys(detectors))
    if len(detectors) == len(series):
        return detectors
    names = []
    for i, s in enumerate(series):
        camera = _deep(objects[i], "CameraNamePath") if i < len(objects) else None
        names.append(camera or s.path.stem.rsplit("_", 1)[-1].join(("series ", "")))
    return names


def _deep(tree: dict, key: str) -> str | None:
    """The first value named `key` anywhere in a parsed ObjectInfo."""
    for name, value in tree.items():
        if name == key and isinstance(value, str):
            return value or None
        if isinstance(value, dict):
            found = _deep(value, key)
            if found:
                return found
    return None
