"""Velox EMD (Thermo Fisher): every image signal of the file, detectors as channels, frames as time.

Layout: /Data/Image/<uuid>/Data is (Y, X, frames), /Data/Image/<uuid>/Metadata holds one JSON
document per frame as a zero-padded uint8 column. Spectra and spectrum images are left out.
"""
from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from converters.base import ConversionError, ConvertOptions, SourceImage
from converters.formats._hdf5 import complex_parts, h5_kind, open_h5, pixel_kind
from converters.meta import flatten, pixel_size, to_metres
from converters.planes import FuncPlane, common_dtype

NAME = "Velox EMD"
EXTENSIONS = (".emd",)
PRIORITY = 10
_NON_IMAGE = {"Spectrum": "spectrum", "SpectrumImage": "spectrum image", "SpectrumStream": "spectrum stream"}


def identify(head: bytes, path: Path) -> bool:
    def is_velox(f: h5py.File) -> bool:
        return "Version" in f and "Data" in f and b"Velox" in bytes(np.asarray(f["Version"][0]).item())
    return h5_kind(head, path, is_velox)


def read(files: list[Path], options: ConvertOptions) -> SourceImage:
    path = files[0]
    f = open_h5(path)
    try:
        return _read(f, path)
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
        f.close()
        raise ConversionError(f"{path.name}: the Velox layout is damaged ({type(e).__name__}: {e})") from None
    except BaseException:
        f.close()
        raise


def _read(f: h5py.File, path: Path) -> SourceImage:
    notes = []
    for group, label in _NON_IMAGE.items():
        for key in f.get(f"Data/{group}", {}):
            notes.append(f"left out {label} {key} (not an image; OME-TIFF holds images only)")
    signals = []
    labels = _display_labels(f)
    operations = _operations(f)
    for key, group in f.get("Data/Image", {}).items():
        data = group.get("Data")
        if not isinstance(data, h5py.Dataset) or data.ndim != 3:
            notes.append(f"left out image {key}: its data is not a (Y, X, frames) array")
            continue
        kind = pixel_kind(data.dtype)
        if kind == "other":
            notes.append(f"left out image {key}: pixel type {data.dtype} is not an image type")
            continue
        meta = _frame_metadata(group, path)
        name = _name(key, operations, labels) or meta.get("BinaryResult", {}).get("Detector") or key
        signals.append((key, name, data, kind, meta))
    if not signals:
        raise ConversionError(f"{path.name} holds no image (only {', '.join(notes) or 'empty groups'})")

    # channels must share a shape: keep the most common (Y, X, frames), name the others
    shapes = Counter(s[2].shape for s in signals)
    shape = shapes.most_common(1)[0][0]
    for key, name, data, _, _ in signals:
        if data.shape != shape:
            notes.append(f"left out image {name!r}: {data.shape[1]}x{data.shape[0]}x{data.shape[2]} does not match "
                         f"the other images ({shape[1]}x{shape[0]}x{shape[2]}); export it separately")
    signals = [s for s in signals if s[2].shape == shape]
    ny, nx, frames = shape

    signals = _unique_names(signals)
    readers, channels, detectors, dtypes = [], [], [], []
    for key, name, data, kind, meta in signals:
        detector = meta.get("BinaryResult", {}).get("Detector", "")
        if kind == "complex":
            dtype, amplitude, phase = complex_parts(_band(data, 0), data.dtype)
            readers += [("complex-amplitude", data), ("complex-phase", data)]
            channels += [f"{name} amplitude", f"{name} phase"]
            dtypes += [dtype, dtype]
            detectors += [detector, detector]
        else:
            readers.append(("real", data))
            channels.append(name)
            dtypes.append(np.dtype(data.dtype).newbyteorder("="))
            detectors.append(detector)
    dtype = common_dtype(dtypes)

    def planes():
        for t in range(frames):
            for how, data in readers:
                read = _band(data, t)
                if how != "real":
                    _, amplitude, phase = complex_parts(read, data.dtype)
                    read = amplitude if how == "complex-amplitude" else phase
                yield FuncPlane((ny, nx), dtype, read)

    first = signals[0][4]
    binary = first.get("BinaryResult", {})
    size = binary.get("PixelSize", {})
    x = to_metres(float(size.get("width", "nan")), binary.get("PixelUnitX", ""))
    y = to_metres(float(size.get("height", "nan")), binary.get("PixelUnitY", ""))
    stamp = first.get("Acquisition", {}).get("AcquisitionStartDatetime", {}).get("DateTime")
    instrument = first.get("Instrument", {})
    frame_time = first.get("Scan", {}).get("FrameTime")
    return SourceImage(
        shape={"T": frames, "C": len(channels), "Z": 1, "Y": ny, "X": nx}, dtype=dtype, planes=planes,
        channels=channels, pixel_size=pixel_size(x, y),
        acquired=datetime.fromtimestamp(int(stamp), timezone.utc) if stamp else None,
        microscope=instrument.get("InstrumentModel") or instrument.get("InstrumentClass"),
        detector=", ".join(dict.fromkeys(d for d in detectors if d)) or None,
        channel_detectors=detectors, metadata=_metadata(signals), notes=notes,
        time_increment=float(frame_time) if frame_time and frames > 1 else None, close=f.close,
    )


def _operations(f: h5py.File) -> dict[str, list[dict]]:
    ops = {}
    for kind, group in f.get("Operations", {}).items():
        if isinstance(group, h5py.Group):
            ops[kind] = [_json(item) for item in group.values() if isinstance(item, h5py.Dataset)]
    return ops


def _json(item: h5py.Dataset) -> dict:
    try:
        value = json.loads(bytes(np.asarray(item[0]).item()))
    except (ValueError, TypeError, IndexError):
        return {}
    return value if isinstance(value, dict) else {}


def _name(key: str, ops: dict[str, list[dict]], labels: dict[str, str]) -> str | None:
    """The signal's name as Velox (and rsciio) gives it: what produced it, else its display label.

    Plain detector inputs (a segment of DF4...) are better told apart by their display label.
    """
    def produced(op: dict, field: str = "dataPath") -> bool:
        return key in str(op.get(field, ""))

    for op in ops.get("CameraInputOperation", []) + ops.get("StemInputOperation", []):
        if produced(op):
            return labels.get(key) or op.get("cameraName") or op.get("detector")
    for op in ops.get("SurfaceReconstructionOperation", []):
        mode = "iDPC" if op.get("integrationMode") == "true" else "dDPC"
        if produced(op, "unfilteredDataPath"):
            return mode
        if produced(op):
            return f"Filtered {mode}" if op.get("enableFilter") == "true" else mode
    for op in ops.get("MathematicsOperation", []):
        if produced(op):
            index = str((op.get("outputs") or [{}])[0].get("inputIndex"))
            return {"0": "A-C", "1": "B-D"}.get(index, labels.get(key))
    simple = {"DpcOperation": "DPC", "IntegrationOperation": "DCFI"}
    for kind, name in simple.items():
        if any(produced(op) for op in ops.get(kind, [])):
            return name
    if any(produced(op, "imageOutputPath") for op in ops.get("FftOperation", [])):
        return "Half FFT"
    return labels.get(key)


def _unique_names(signals):
    seen = Counter()
    out = []
    for key, name, data, kind, meta in signals:
        seen[name] += 1
        out.append((key, name if seen[name] == 1 else f"{name} ({seen[name]})", data, kind, meta))
    return out


def _band(data: h5py.Dataset, t: int):
    return lambda y0, y1: data[y0:y1, :, t]


def _frame_metadata(group: h5py.Group, path: Path) -> dict:
    meta = group.get("Metadata")
    if not isinstance(meta, h5py.Dataset) or meta.ndim != 2 or meta.shape[0] > 2**24:
        return {}
    raw = bytes(meta[:, 0]).rstrip(b"\x00")
    try:
        return json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConversionError(f"{path.name}: the metadata of image {group.name} is not valid JSON") from None


def _display_labels(f: h5py.File) -> dict[str, str]:
    """Names Velox shows for each image (its display labels), keyed by image uuid."""
    labels = {}
    for item in f.get("Presentation/Displays/ImageDisplay", {}).values():
        try:
            display = json.loads(bytes(np.asarray(item[0]).item()))
            labels[display["dataPath"].rsplit("/", 1)[-1]] = display["display"]["label"]
        except (KeyError, TypeError, ValueError, IndexError):
            continue
    return labels


def _metadata(signals) -> dict[str, str]:
    """The first image's metadata in full; for the others only what differs, under their name."""
    common = flatten(signals[0][4])
    out = dict(common)
    for _, name, _, _, meta in signals[1:]:
        for key, value in flatten(meta).items():
            if common.get(key) != value:
                out[f"[{name}] {key}"] = value
    return out
