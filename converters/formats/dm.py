"""Gatan DigitalMicrograph DM3/DM4: images, image stacks, spectra and spectrum images.

RosettaSciIO is the reader of record: its lazy read gives the axes (scales, units, which are
navigation), the signal's name and type, and the whole tag tree, without touching the pixels. The
pixels are then read band by band at the data offset it reports, with plain reads like every plugin
(planes.py), so the process holds one band, not a memory map of the file.
"""
from __future__ import annotations

import logging
import math
import re
import struct
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from converters.base import Accounted, ConversionError, ConvertOptions, SourceFile, SourceImage, Spectrum
from converters.formats._dm_tags import check_tags
from converters.formats._hdf5 import complex_parts
from converters.formats._raw import stacked_planes
from converters.limits import check_channels
from converters.meta import calibration, clean, flatten, from_filetime, localize, unknowns

log = logging.getLogger(__name__)
NAME = "Gatan DigitalMicrograph"
EXTENSIONS = (".dm3", ".dm4")
HELP = "Gatan DigitalMicrograph images, stacks and spectrum images (their sum spectrum attached)"
READERS = ("rsciio.digitalmicrograph",)
BAND_BYTES = 16 * 2**20  # spectrum images are summed this many bytes at a time
# Microscope names, most specific first: the session's, the one the facility typed in the Microscope
# Info panel ("NCEM TEAM 0.5"), then the microscope plugin's generic one ("FEI Tecnai").
_MICROSCOPE = ("Session Info.Microscope", "Microscope Info.Microscope", "Microscope Info.Name")
_DETECTOR = ("Acquisition.Device.Name", "DataBar.Device Name")
# Document layout (windows, zoom, thumbnails): the GUI's state, not the acquisition's
_LAYOUT = ("ApplicationBounds", "DocumentObjectList", "DocumentTags", "HasWindowPosition", "Image Behavior",
           "ImageSourceList", "InImageMode", "LayoutType", "MinVersionList", "NextDocumentObjectID",
           "Page Behavior", "PageSetup", "SentinelList", "Thumbnails", "WindowPosition", "ImageList")
_PACKED_COMPLEX = (5, 27, 28)


def identify(head: bytes, path: Path) -> bool:
    """Version 3 or 4 (big-endian), then the file size (4 or 8 bytes) and a byte-order flag of 0 or 1."""
    if len(head) < 16:
        return False
    version = int.from_bytes(head[:4], "big")
    if version not in (3, 4):
        return False
    order = head[8:12] if version == 3 else head[12:16]
    return int.from_bytes(order, "big") in (0, 1)


def read(files: list[Path], options: ConvertOptions) -> SourceImage | SourceFile:
    path = files[0]
    signals = _signals(path)
    images, spectra, accounted = [], [], []
    for signal in signals:
        tags = signal["original_metadata"]["ImageList"]["TagGroup0"]
        name = clean(signal["metadata"]["General"].get("title", "")) or path.stem
        kind = _kind(signal, tags)
        if kind == "spectrum":
            spectra.append(_spectrum(path, signal, tags, name, kind))
            accounted.append(Accounted(f"spectrum {name}", "attachment", f"{spectra[-1].title} spectrum (CSV and plot)"))
        elif kind == "spectrum image":
            spectra.append(_spectrum(path, signal, tags, name, kind))
            accounted.append(Accounted(f"spectrum image {name}", "not kept",
                                       "kept in the original file; its sum spectrum is attached"))
        elif kind == "image":
            image = _image(path, signal, tags, name, options)
            image.title = name if images else None
            images.append(image)
            accounted.append(Accounted(f"image {name}", "image", name))
        else:
            accounted.append(Accounted(f"{kind} {name}", "not kept", "kept in the original file: " + kind))
    if not images and not spectra:
        raise ConversionError(f"{path.name} holds no image or spectrum we can keep ({accounted[0].where})"
                              if accounted else f"{path.name} holds no image")
    if len(images) == 1 and not spectra and len(accounted) == 1:
        return images[0]  # a plain image, as every plugin returns one
    # what the first dataset says of the acquisition, for a file whose image is a spectrum's plot
    tags = signals[0]["original_metadata"]["ImageList"]["TagGroup0"]
    image_tags = tags.get("ImageTags") or {}
    return SourceFile(images=images, spectra=spectra, accounted=accounted,
                      acquired=_acquired(image_tags, options)[0], microscope=_first(image_tags, _MICROSCOPE),
                      metadata=_metadata(signals[0]["original_metadata"], tags))


def _signals(path: Path) -> list[dict]:
    try:
        check_tags(path)  # before rsciio is imported (a second) or trusts any count in the tags
    except ConversionError:
        _refuse_truncated(path)
        raise
    from rsciio import exceptions as rsciio_errors  # imported when used: rsciio pulls in dask
    from rsciio.digitalmicrograph import file_reader

    # what rsciio's tag parser raises on damaged bytes (found by fuzzing: an unknown encoding leaves a
    # variable unset, deep nesting recurses, a cut file ends inside a number)
    _DAMAGED = (rsciio_errors.DM3TagError, rsciio_errors.DM3DataTypeError, rsciio_errors.DM3TagTypeError,
                rsciio_errors.DM3TagIDError, rsciio_errors.DM3FileVersionError, rsciio_errors.ByteOrderError,
                struct.error, UnboundLocalError, RecursionError, OverflowError, OSError, KeyError, IndexError,
                TypeError, AttributeError, EOFError, UnicodeError)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            signals = file_reader(str(path), lazy=True)
        except NotImplementedError as e:  # a DM data type rsciio does not read
            raise ConversionError(f"{path.name}: {e}") from None
        except ValueError as e:
            if "RGB" in str(e):
                raise ConversionError(f"{path.name}: RGB DigitalMicrograph images are not supported") from None
            raise ConversionError(f"{path.name} is not a readable DigitalMicrograph file: {e}") from None
        except _DAMAGED as e:
            _refuse_truncated(path)
            raise ConversionError(f"{path.name} is not a readable DigitalMicrograph file: its tags are damaged "
                                  f"({type(e).__name__}: {e})") from None
    for warning in caught:
        log.debug("rsciio on %s: %s", path.name, warning.message)
    if not signals:
        raise ConversionError(f"{path.name} holds no image")
    return signals


def _refuse_truncated(path: Path) -> None:
    """Refuse a file shorter than its header says: 12 (DM3) or 16 (DM4) header bytes, the tags it
    counts, 8 closing zeros. Damage in a cut file is the cut's."""
    with open(path, "rb") as f:
        head = f.read(16)
    if int.from_bytes(head[:4], "big") == 3:
        declared = 12 + int.from_bytes(head[4:8], "big") + 8
    else:
        declared = 16 + int.from_bytes(head[4:12], "big") + 8
    held = path.stat().st_size
    if held < declared:
        raise ConversionError(f"{path.name} is truncated: its header says {declared} bytes, the file holds "
                              f"{held} (an interrupted copy?)") from None


def _kind(signal: dict, tags: dict) -> str:
    """ "image", "spectrum", "spectrum image" or what is not kept, from rsciio's axes (size-1 axes dropped)."""
    axes = [a for a in signal["axes"] if a["size"] > 1]
    if len(axes) >= 3 and _spectrum_image(tags):
        return "spectrum image"
    signal_axes = [a for a in axes if not a["navigate"]]
    navigation = len(axes) - len(signal_axes)
    if len(signal_axes) == 1:
        return "spectrum" if navigation == 0 else "spectrum image"
    if len(signal_axes) == 2 and navigation <= 1:
        return "image"
    return f"{len(axes)}-D data"


def _spectrum_image(tags: dict) -> bool:
    """rsciio's rule (ImageObject.to_spectrum): GMS marks a spectrum image in Meta Data, Orsay with `spim`.
    rsciio then reads it as images with energy as their navigation axis, the order it is stored in."""
    image_tags = tags.get("ImageTags") or {}
    meta = image_tags.get("Meta Data") or {}
    return (isinstance(meta, dict) and meta.get("Format") == "Spectrum image") or "spim" in image_tags


def _layout(path: Path, signal: dict, tags: dict) -> tuple[int, np.dtype, tuple[int, ...]]:
    """Offset, stored dtype and C-order shape of the pixels, checked against the file."""
    data = tags["ImageData"]
    if int(data.get("DataType", -1)) in _PACKED_COMPLEX:
        raise ConversionError(f"{path.name}: packed complex (FFT) DigitalMicrograph data is not supported")
    stored = np.dtype(signal["data"].dtype).newbyteorder("<" if data["Data"].get("endian") == "little" else ">")
    shape = tuple(int(n) for n in signal["data"].shape)
    offset, needed = int(data["Data"]["offset"]), math.prod(shape) * stored.itemsize
    if int(data["Data"].get("size", -1)) != math.prod(shape) or offset + needed > path.stat().st_size:
        raise ConversionError(f"{path.name} is truncated or damaged: its {'x'.join(map(str, shape[::-1]))} "
                              f"{stored.name} pixels need {needed} bytes from byte {offset}, the file holds "
                              f"{path.stat().st_size}")
    return offset, stored, shape


def _image(path: Path, signal: dict, tags: dict, name: str, options: ConvertOptions) -> SourceImage:
    offset, stored, shape = _layout(path, signal, tags)
    ny, nx = shape[-2:]
    frames = math.prod(shape[:-2])  # an image stack's navigation axis: a series in time
    if stored.kind == "c":
        dtype, _, _ = complex_parts(lambda y0, y1: None, stored)
        channels = [f"{name} amplitude", f"{name} phase"]
    else:
        dtype, channels = stored.newbyteorder("="), [name]

    image_tags = tags.get("ImageTags") or {}
    detector = _first(image_tags, _DETECTOR)
    if detector and stored.kind != "c":
        channels = [detector]
    y, x = signal["axes"][-2], signal["axes"][-1]
    cal = calibration((float(x["scale"]), x["units"]), (float(y["scale"]), y["units"]))
    acquired, notes = _acquired(image_tags, options)
    microscope = _first(image_tags, _MICROSCOPE)
    metadata = _metadata(signal["original_metadata"], tags)
    metadata.update(cal.metadata)
    time_increment = None
    if frames > 1:
        axis = signal["axes"][0]
        time_increment = float(axis["scale"]) if axis["units"] == "s" and float(axis["scale"]) > 0 else None
    return SourceImage(
        shape={"T": frames, "C": len(channels), "Z": 1, "Y": ny, "X": nx}, dtype=np.dtype(dtype),
        planes=lambda: stacked_planes(path, offset, frames, (ny, nx), stored, dtype),
        channels=channels, pixel_size=cal.pixel_size, acquired=acquired, microscope=microscope, detector=detector,
        metadata=metadata, notes=notes, time_increment=time_increment,
        warnings=unknowns(acquired, microscope, cal.known),
    )


def _spectrum(path: Path, signal: dict, tags: dict, name: str, kind: str) -> Spectrum:
    """A spectrum, or the sum spectrum of a spectrum image, read band by band."""
    offset, stored, shape = _layout(path, signal, tags)
    if stored.kind == "c":
        raise ConversionError(f"{path.name}: complex spectra are not supported")
    if _spectrum_image(tags) and len(shape) >= 3:
        energy_index = 0  # stored as one image per channel: energy is the slowest axis
    else:
        energy_index = next(i for i, a in enumerate(signal["axes"]) if not a["navigate"] and a["size"] > 1)
    energy = signal["axes"][energy_index]
    check_channels(path.name, f"the spectrum {name}", shape[energy_index])
    counts = np.zeros(shape[energy_index], np.float64)
    rest = math.prod(shape[1:])
    step = max(1, BAND_BYTES // max(1, rest * stored.itemsize))
    with open(path, "rb") as f:
        for i0 in range(0, shape[0], step):
            i1 = min(shape[0], i0 + step)
            f.seek(offset + i0 * rest * stored.itemsize)
            block = np.fromfile(f, stored, (i1 - i0) * rest).reshape((i1 - i0, *shape[1:]))
            if energy_index == 0:  # energy is the slowest axis: each block holds whole channels
                counts[i0:i1] += block.reshape(i1 - i0, -1).sum(axis=1, dtype=np.float64)
            else:
                others = tuple(i for i in range(len(shape)) if i != energy_index)
                counts += block.sum(axis=others, dtype=np.float64)
    signal_type = clean(signal["metadata"].get("Signal", {}).get("signal_type", "")).replace("_TEM", "")
    title = signal_type or "Spectrum"
    if kind == "spectrum image":
        title += " (sum of the spectrum image)"
    return Spectrum(title=title, counts=counts, offset=float(energy["offset"]), scale=float(energy["scale"]),
                    unit=clean(energy["units"] or ""), source=f"{kind} {name}")


def _acquired(image_tags: dict, options: ConvertOptions) -> tuple[datetime | None, list[str]]:
    """The acquisition time from, in order: the DataBar's `Acquisition Time (OS)` (a Windows FILETIME,
    UTC), the frame sequence's `Acquisition Start Time (epoch)` (milliseconds, UTC), and last the
    DataBar's date and time text, which follows the PC's locale: read in the facility's zone, and
    only when the day and month cannot be swapped."""
    bar = image_tags.get("DataBar") or {}
    stamp = from_filetime(_number(bar.get("Acquisition Time (OS)")))
    if stamp:
        return stamp, []
    epoch = _number(_dig(image_tags, "Acquisition.Frame.Sequence.Acquisition Start Time (epoch)"))
    if epoch is not None and 1e11 < epoch < 1e14:  # 1973..5138 in milliseconds
        return datetime.fromtimestamp(epoch / 1000, UTC), []
    date, time = clean(bar.get("Acquisition Date", "")), clean(bar.get("Acquisition Time", ""))
    if not date:
        return None, []
    day = _date(date)
    clock = _time(time)
    if day is None or clock is None:
        return None, [f"acquisition date {date} {time} could not be read unambiguously (its day/month order "
                      f"depends on the acquiring PC's language settings)"]
    return localize(datetime.combine(day, clock), options.timezone), []


_SLASHED = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})$")


def _date(text: str):
    for form in ("%Y-%m-%d", "%Y/%m/%d", "%d.%m.%Y", "%d.%m.%y"):  # ISO, and the dotted European form
        try:
            return datetime.strptime(text, form).date()
        except ValueError:
            continue
    match = _SLASHED.match(text)
    if not match:
        return None
    a, b, year = int(match[1]), int(match[2]), int(match[3])
    year += 2000 if year < 100 else 0
    if a > 12 and b <= 12:
        day, month = a, b
    elif b > 12 and a <= 12 or a == b:
        month, day = a, b
    else:
        return None  # 3/4/2017: March 4 in the US, 3 April in most of Europe
    try:
        return datetime(year, month, day).date()
    except ValueError:
        return None


def _time(text: str):
    for form in ("%I:%M:%S %p", "%H:%M:%S", "%I:%M %p", "%H:%M"):
        try:
            return datetime.strptime(text, form).time()
        except ValueError:
            continue
    return None


def _number(value) -> float | None:
    try:
        return float(value) if not isinstance(value, (str, bytes, dict, list)) else None
    except (TypeError, ValueError):
        return None


def _first(tags: dict, paths: tuple[str, ...]) -> str | None:
    for dotted in paths:
        value = _dig(tags, dotted)
        if isinstance(value, str) and clean(value) not in ("", "[]"):
            return clean(value)
    return None


def _dig(tags: dict, dotted: str):
    node = tags
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _metadata(document: dict, tags: dict) -> dict[str, str]:
    """The image's tags (ImageTags, calibrations, name) and the document's non-layout tags."""
    kept = {k: v for k, v in tags.items() if k != "ImageData"}
    kept["ImageData"] = {k: v for k, v in tags.get("ImageData", {}).items() if k != "Data"}  # Data: its offset
    out = flatten(kept)
    out.update(flatten({k: v for k, v in document.items() if k not in _LAYOUT and k != "root"}))
    return out
