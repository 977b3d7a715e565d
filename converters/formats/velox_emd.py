"""Velox EMD (Thermo Fisher): every signal of the file gets a place, read through RosettaSciIO.

RosettaSciIO (rsciio.emd) is the reader of record: signal titles (element maps by element, DPC,
detectors), axes with their scales and units, and the original metadata. Images of the most
common shape are the channels of the primary image; images of other shapes become images of their
own. Spectra become attachments; spectrum images and streams their sum spectrum (the full data
stays in the original file, which the pipeline attaches). Everything else in the file is accounted
for as kept in the original file.

Layout: /Data/<Kind>/<uuid>/Data (images (Y, X, frames)), /Data/<Kind>/<uuid>/Metadata (JSON per frame).
"""
from __future__ import annotations

import json
import math
from collections import Counter
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

import h5py
import numpy as np

from converters.base import Accounted, ConversionError, ConvertOptions, SourceFile, SourceImage, Spectrum
from converters.formats._hdf5 import DAMAGED, attr_text, channels_of, damaged, h5_kind, open_h5, pixel_kind
from converters.formats._rsciio import axis_size, read_signals, seconds, unix_time
from converters.limits import blocks, check_channels, check_h5
from converters.meta import flatten
from converters.planes import FilePlane, FuncPlane, common_dtype
from converters.registry import unique_names

NAME = "Velox EMD"
EXTENSIONS = (".emd",)
HELP = "Thermo Fisher Velox: every image, spectrum and map becomes an image or a CSV and PNG attachment"
PRIORITY = 10
# _emd_velox builds pint's unit registry on import (0.4 s): warm_up pays it, not the first conversion
READERS = ("rsciio.emd", "rsciio.emd._emd_velox")
STREAM_BLOCK = 2**22  # spectrum stream values summed per read: 8 MiB of uint16
NEXT_PIXEL = 65535  # in a spectrum stream, every other value is the channel of one count
MAX_METADATA = 2**24  # bytes of one JSON metadata record (Velox writes 60000)
MAX_CHUNKS = 100_000  # HDF5 chunks of one image (Velox: one per frame)
MAX_WHOLE = 64 * 2**20  # bytes of an array rsciio reads whole: a spectrum, an unchunked image (not Velox's)
# file-wide groups that rsciio copies into every signal's original metadata: kept in the original file
_FILE_WIDE = ("Operations", "Features", "Displays", "SharedProperties", "DetectorMetadata")


def identify(head: bytes, path: Path) -> bool:
    def is_velox(f: h5py.File) -> bool:
        # Velox writes a one-element array of bytes; other writers a scalar or a str
        version = f.get("Version")
        return isinstance(version, h5py.Dataset) and version.size == 1 and "Data" in f \
            and "Velox" in (attr_text(version[()]) or "")
    return h5_kind(head, path, is_velox)


def read(files: list[Path], options: ConvertOptions) -> SourceFile:
    path = files[0]
    f = open_h5(path)
    try:
        return _read(f, path)
    except (KeyError, ValueError, TypeError, IndexError, json.JSONDecodeError) as e:
        f.close()
        raise ConversionError(f"{path.name}: the Velox layout is damaged ({type(e).__name__}: {e})") from None
    except DAMAGED as e:
        f.close()
        raise damaged(path, e) from None
    except BaseException:
        f.close()
        raise


def _read(f: h5py.File, path: Path) -> SourceFile:
    data = f["Data"]
    if not isinstance(data, h5py.Group) or not all(isinstance(item, h5py.Group) for item in data.values()):
        raise ConversionError(f"{path.name}: its Data is not a Velox group of signals; the file is damaged")
    for kind, label in (("Image", "image"), ("Spectrum", "spectrum")):
        for n, group in enumerate(data.get(kind, {}).values(), 1):
            for part in ("Data", "Metadata"):
                if not isinstance(group, h5py.Group) or not isinstance(group.get(part), h5py.Dataset):
                    raise ConversionError(f"{path.name}: {label} {n} has no {part}; the file is damaged or was "
                                          f"not written by Velox")
            # rsciio reads a Metadata column whole: a damaged header must not make that gigabytes
            if group["Metadata"].ndim != 2 or group["Metadata"].shape[0] > MAX_METADATA:
                raise ConversionError(f"{path.name}: the metadata of {label} {n} is not a Velox JSON record")
            check_h5(group["Metadata"], path.name, f"metadata of {label} {n}")
            check_h5(group["Data"], path.name, "pixels" if kind == "Image" else f"spectrum {n}")
            if kind == "Spectrum" and group["Data"].size * group["Data"].dtype.itemsize > MAX_WHOLE:
                raise ConversionError(f"{path.name}: spectrum {n} is too large to be a spectrum; the file is damaged")
            if kind == "Spectrum" and group["Data"].ndim:
                check_channels(path.name, f"spectrum {n}", group["Data"].shape[-1])
    accounted: list[Accounted] = []
    images, image_accounts = _images(f, path)
    spectra = _spectra(f, path, accounted)
    spectra += _spectrum_image_sums(f, path, accounted)
    log = _acquisition_log(f, accounted)
    for kind in data:
        if kind not in ("Image", "Spectrum", "SpectrumStream", "SpectrumImage", "EelsSpectrumImage", "Text"):
            accounted += [Accounted(f"{kind} data", "attachment", "the original file (not read by this converter)")
                          for _ in data[kind]]
    for name in f:
        if name != "Data":
            accounted.append(Accounted(name, "attachment", "the original file (Velox settings, not measured data)"))
    source = SourceFile(images, spectra, image_accounts + accounted)
    if not images:  # the registry plots a spectrum instead: it carries the file's facts
        source.acquired, source.microscope, source.metadata = _file_facts(f)
        f.close()  # no pixels to read later
    if log:
        (images[0].metadata if images else source.metadata)["Acquisition log"] = log
    for image in images:
        image.acquired = image.acquired or _log_time(log)
    source.acquired = source.acquired or _log_time(log)
    return source


def _images(f: h5py.File, path: Path) -> tuple[list[SourceImage], list[Accounted]]:
    group = f.get("Data/Image")
    if not isinstance(group, h5py.Group) or not len(group):
        return [], []
    keys = list(group)
    # rsciio's lazy read makes a dask task per HDF5 chunk: it needs chunked arrays (as Velox writes
    # them, a frame per chunk), and a damaged chunk layout must not make millions of tasks
    arrays = [group[key]["Data"] for key in keys]
    # Velox writes no empty image: the array's header is damaged (rsciio would divide by its size)
    empty = next((a.shape for a in arrays if isinstance(a, h5py.Dataset) and a.ndim == 3 and 0 in a.shape), None)
    if empty:
        raise ConversionError(f"{path.name}: an image declares {empty[1]}x{empty[0]} pixels in {empty[2]} frames, an "
                              f"empty array; the file is damaged")
    lazy = all(a.chunks and math.prod(-(-n // c) for n, c in zip(a.shape, a.chunks)) <= MAX_CHUNKS for a in arrays)
    if not lazy and sum(a.size * a.dtype.itemsize for a in arrays) > MAX_WHOLE:
        raise ConversionError(f"{path.name} stores its images unchunked or in {MAX_CHUNKS:,}+ chunks, which "
                              f"RosettaSciIO can only read whole, and they are too large for that; save the file "
                              f"again from Velox")
    refs = read_signals(f, path, lazy=lazy, select_type="images", load_SI_image_stack=True)
    if len(refs) != len(keys):
        raise ConversionError(f"{path.name}: RosettaSciIO reads {len(refs)} of the {len(keys)} images in the file")
    names = unique_names([ref["metadata"]["General"].get("title") or "image" for ref in refs])
    signals, accounted = [], []
    for key, name, ref in zip(keys, names, refs):
        dataset = group[key].get("Data")
        if not isinstance(dataset, h5py.Dataset) or dataset.ndim != 3 or pixel_kind(dataset.dtype) == "other":
            accounted.append(Accounted(f"image {name}", "not kept", "its data is not a (Y, X, frames) image array"))
            continue
        signals.append((name, dataset, ref))
    if not signals:
        return [], accounted
    stem = path.stem
    shape = Counter(s[1].shape for s in signals).most_common(1)[0][0]  # the most common shape; ties: the first
    primary = [s for s in signals if s[1].shape == shape]
    images = [_image(primary, None, f)]
    accounted += [Accounted(f"image {name}", "channel", f"{stem}: {', '.join(c[0] for c in channels_of(name, data))}")
                  for name, data, _ in primary]
    for signal in signals:
        if signal[1].shape != shape:
            images.append(_image([signal], signal[0], f))
            accounted.append(Accounted(f"image {signal[0]}", "image", f"{stem} [{signal[0]}]"))
    return images, accounted


def _image(signals, title: str | None, f: h5py.File) -> SourceImage:
    """One image whose channels are these signals (all of one shape)."""
    ny, nx, frames = signals[0][1].shape
    layers = [(data, channel, ref["original_metadata"].get("BinaryResult", {}).get("Detector", ""))
              for name, data, ref in signals for channel in channels_of(name, data)]
    channels = [channel[0] for _, channel, _ in layers]
    detectors = [detector for _, _, detector in layers]
    dtype = common_dtype([channel[1] for _, channel, _ in layers])

    def planes():
        # Pixels are read with our own h5py handle, band by band, rather than through rsciio's lazy
        # dask array: rsciio opens the file with h5py's 1 MiB chunk cache, so every band of a
        # frame-sized Velox chunk would decompress the whole chunk again.
        for t in range(frames):
            for data, (_, _, channel_rows), _ in layers:
                yield FuncPlane((ny, nx), dtype, channel_rows(_band(data, t)))

    # channels of one scan share its facts: each from the first channel that has it (EELS maps may not)
    oms = [ref["original_metadata"] for _, _, ref in signals]
    # rsciio makes a missing PixelSize 1 (of PixelUnitX): that would be invented, so it is unknown here
    sizes = [axis_size(ref["axes"]) if "PixelSize" in om.get("BinaryResult", {}) else (None, {}, [])
             for om, (_, _, ref) in zip(oms, signals)]
    size, calibration, warnings = next((found for found in sizes if found[0] or found[1]), sizes[0])
    time = next((a for a in signals[0][2]["axes"] if a.get("name") == "Time"), None)
    return SourceImage(
        shape={"T": frames, "C": len(channels), "Z": 1, "Y": ny, "X": nx}, dtype=dtype, planes=planes,
        channels=channels, pixel_size=size,
        acquired=next((t for t in map(_acquired, oms) if t), None),
        microscope=next((m for m in map(_microscope, oms) if m), None),
        detector=", ".join(dict.fromkeys(d for d in detectors if d)) or None, channel_detectors=detectors,
        metadata=calibration | _metadata(signals),
        time_increment=seconds(time["scale"], time.get("units")) if time and frames > 1 else None,
        close=f.close, title=title, warnings=warnings,
    )


def _acquired(om: dict) -> datetime | None:
    """Acquisition time from one signal's metadata, tried in this order: the start (Unix seconds,
    UTC), the end (Unix seconds; Velox writes 0 when it has none), the Ceta's time stamp (microseconds).
    rsciio's own date and time are local to the converting machine, so we read its sources ourselves.
    A signal without any borrows from the others of its image, then from the acquisition log."""
    acquisition = om.get("Acquisition", {})
    for key in ("AcquisitionStartDatetime", "AcquisitionDatetime"):
        found = unix_time(acquisition.get(key, {}).get("DateTime"))
        if found:
            return found
    custom = om.get("CustomProperties")
    ceta = custom.get("Detectors[BM-Ceta].TimeStamp", {}).get("value") if isinstance(custom, dict) else None
    return unix_time(float(ceta) / 1e6) if ceta else None


def _microscope(om: dict) -> str | None:
    instrument = om.get("Instrument", {})
    return instrument.get("InstrumentModel") or instrument.get("InstrumentClass") or None


def _log_time(log: str) -> datetime | None:
    """The first time stamp of the acquisition log ("2026-06-11T12:01:02+0200 Started acquisition...")."""
    try:
        return datetime.strptime(log.split(maxsplit=1)[0], "%Y-%m-%dT%H:%M:%S%z") if log.strip() else None
    except ValueError:
        return None


def _metadata(signals) -> dict[str, str]:
    """The first signal's metadata in full; for the others only what differs, under their name."""
    def own(ref):
        return flatten({k: v for k, v in ref["original_metadata"].items() if k not in _FILE_WIDE})
    common = own(signals[0][2])
    out = dict(common)
    for name, _, ref in signals[1:]:
        out.update({f"[{name}] {k}": v for k, v in own(ref).items() if common.get(k) != v})
    return out


def _spectra(f: h5py.File, path: Path, accounted: list[Accounted]) -> list[Spectrum]:
    group = f.get("Data/Spectrum")
    if not isinstance(group, h5py.Group) or not len(group):
        return []
    # not lazily: spectra are small, and rsciio's lazy read fails on unchunked ones
    refs = read_signals(f, path, lazy=False, select_type="single_spectrum") if "Image" not in f["Data"] or \
        "SpectrumImage" in f["Data"] else []
    if len(refs) != len(group):  # rsciio reads spectra only beside a spectrum image or without images
        accounted += [Accounted("spectrum", "attachment", "the original file (RosettaSciIO does not read spectra "
                                "stored beside plain images)") for _ in group]
        return []
    found = []
    titles = unique_names([f"EDS {ref['original_metadata'].get('BinaryResult', {}).get('Detector', '')}".strip()
                      for ref in refs])
    for title, ref in zip(titles, refs):
        counts = np.asarray(ref["data"])
        if counts.ndim == 2:  # a stack of spectra: their sum
            counts = counts.sum(axis=0)
        energy = ref["axes"][-1]
        unit = energy.get("units") or ""
        found.append(Spectrum(title, counts, float(energy["offset"]) if unit else 0.0,
                              float(energy["scale"]) if unit else 1.0, unit, f"spectrum {title}"))
        accounted.append(Accounted(f"spectrum {title}", "attachment", f"{title} spectrum (CSV and plot)"))
    return found


def _spectrum_image_sums(f: h5py.File, path: Path, accounted: list[Accounted]) -> list[Spectrum]:
    """The sum spectrum of each spectrum image, read by our own code in bounded memory.

    rsciio decodes a whole EDS spectrum stream into memory and reads EELS spectrum images whole;
    summing block by block keeps memory to one block whatever the acquisition's size.
    """
    found = []
    streams = f.get("Data/SpectrumStream")
    title = "EDS (sum of the spectrum image)"
    if isinstance(streams, h5py.Group) and len(streams):
        total, meta = None, {}
        for key in streams:
            meta = _json_column(streams[key]["Metadata"])
            counts = _stream_sum(streams[key], path.name)
            total = counts if total is None else _add(total, counts)
            detector = meta.get("BinaryResult", {}).get("Detector", "")
            accounted.append(Accounted(f"spectrum stream {detector}".strip(), "attachment",
                                       f"summed into {title}; the full spectrum image stays in the original file"))
        offset, scale, unit = _eds_calibration(meta)
        found.append(Spectrum(title, total, offset, scale, unit, "spectrum streams"))
    for group in f.get("Data/SpectrumImage", {}).values():
        detector = _json_column(group["Metadata"]).get("BinaryResult", {}).get("Detector", "")
        where = (f"{title} (from its spectrum streams); the full data stays in the original file" if found else
                 "the original file (stored in Velox's own compressed form, which no open reader decodes)")
        accounted.append(Accounted(f"spectrum image {detector}".strip(), "attachment", where))
    for group in f.get("Data/EelsSpectrumImage", {}).values():
        calibration = _json_column(group["AcquisitionMetadata"]).get("Data", {})
        offset, scale = float(calibration.get("offset", 0.0)), float(calibration.get("dispersion", 0.0))
        eels = f"EELS from {offset:.4g} eV (sum of the spectrum image)" if scale else "EELS (sum of the spectrum image)"
        found.append(Spectrum(eels, _cube_sum(group["Data"], path.name), offset if scale else 0.0, scale or 1.0,
                              "eV" if scale else "", "EELS spectrum image"))
        accounted.append(Accounted(eels.replace(" (sum of the spectrum image)", " spectrum image"), "attachment",
                                   f"{eels}; the full spectrum image stays in the original file"))
    return found


def _stream_sum(group: h5py.Group, name: str) -> np.ndarray:
    channels = int(json.loads(bytes(np.asarray(group["AcquisitionSettings"][0]).item()))["bincount"])
    data = group["Data"]
    check_channels(name, "a spectrum stream", channels)
    check_h5(data, name, "spectrum stream")
    total = np.zeros(channels, np.int64)
    for start in range(0, data.shape[0], STREAM_BLOCK):
        values = data[start:start + STREAM_BLOCK, 0]
        values = values[values != NEXT_PIXEL]
        if values.size and int(values.max()) >= channels:
            raise ConversionError(f"a spectrum stream names channel {int(values.max())} of {channels}: it is damaged")
        total += np.bincount(values, minlength=channels)
    return total


def _cube_sum(data: h5py.Dataset, name: str) -> np.ndarray:
    """Sum of an EELS cube stored (x, energy, y) or (x, energy), a bounded block at a time."""
    if data.ndim not in (2, 3):
        raise ConversionError(f"an EELS spectrum image is {data.ndim}-D, expected 2-D or 3-D")
    check_h5(data, name, "EELS spectrum image")
    check_channels(name, "an EELS spectrum image", data.shape[1])
    total = np.zeros(data.shape[1], np.float64 if data.dtype.kind == "f" else np.int64)
    for index in blocks(data.shape):
        energies = index[1] if len(index) > 1 else slice(None)  # a block of fewer channels than all
        total[energies] += data[index].sum(axis=(0, 2) if data.ndim == 3 else 0, dtype=total.dtype)
    return total


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.shape != b.shape:
        raise ConversionError("the spectrum streams of one spectrum image have different channel counts")
    return a + b


def _eds_calibration(meta: dict) -> tuple[float, float, str]:
    """Energy of channel 0 and per channel, in keV, as rsciio reads it for spectra (Detectors in eV)."""
    detector = meta.get("BinaryResult", {}).get("Detector")
    for entry in meta.get("Detectors", {}).values():
        if detector and detector in entry.get("DetectorName", "") and "Dispersion" in entry:
            return float(entry["OffsetEnergy"]) / 1000, float(entry["Dispersion"]) / 1000, "keV"
    return 0.0, 1.0, ""


def _acquisition_log(f: h5py.File, accounted: list[Accounted]) -> str:
    texts = []
    for item in f.get("Data/Text", {}).values():
        try:
            texts.append(unquote(json.loads(bytes(np.asarray(item[0]).item()))["text"]).strip())
            accounted.append(Accounted("acquisition log", "metadata", "key 'Acquisition log' of the primary image"))
        except (KeyError, TypeError, ValueError, IndexError):
            accounted.append(Accounted("text", "attachment", "the original file (not a Velox text record)"))
    return "\n".join(texts)


def _file_facts(f: h5py.File):
    """Date, microscope and metadata of a file with spectra but no image (from its first spectrum)."""
    for kind in ("Spectrum", "SpectrumStream", "EelsSpectrumImage"):
        for group in f.get(f"Data/{kind}", {}).values():
            om = _json_column(group["Metadata"])
            return _acquired(om), _microscope(om), flatten(om)
    return None, None, {}


def _json_column(item: h5py.Dataset) -> dict:
    """A Velox JSON record stored as a zero-padded uint8 column (the first frame's)."""
    if item.ndim != 2 or item.shape[0] > MAX_METADATA:
        raise ConversionError(f"metadata {item.name} is not a Velox JSON record")
    raw = bytes(item[:, 0]).rstrip(b"\x00")
    try:
        value = json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConversionError(f"the metadata of {item.parent.name.rsplit('/', 2)[-2]} is not valid JSON") from None
    return value if isinstance(value, dict) else {}


def _band(data: h5py.Dataset, t: int):
    stored = _stored_frame(data, t)
    return stored.rows if stored is not None else lambda y0, y1: data[y0:y1, :, t]


def _stored_frame(data: h5py.Dataset, t: int) -> FilePlane | None:
    """Frame t read at its offset in the file, when Velox stores it as it usually does: one unfiltered
    chunk of (Y, X, 1), whose rows lie one after the other. HDF5 would otherwise keep the whole frame
    in its chunk cache (32-64 MiB a frame, and the next frame's beside it while bands are read)."""
    ny, nx, _ = data.shape
    if data.dtype.kind not in "iuf" or data.chunks != (ny, nx, 1) or data.id.get_create_plist().get_nfilters():
        return None
    info = data.id.get_chunk_info_by_coord((0, 0, t))
    if info.byte_offset is None or info.size != ny * nx * data.dtype.itemsize:
        return None  # a frame never written reads as HDF5's fill value
    return FilePlane(Path(data.file.filename), info.byte_offset, (ny, nx), data.dtype)
