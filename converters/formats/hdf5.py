"""Any other HDF5: each numeric array of two or more dimensions becomes an image, attributes its metadata.

Asked after Velox and Berkeley EMD. A file another program wrote (a plain h5py file) still imports,
with warnings naming what is unknown: HDF5 has no standard date, instrument or pixel size, so none is
guessed. The largest array is the primary image, the others (up to MAX_IMAGES) images titled by their path.
A 3-D array's first axis becomes Z when its dimension label says depth, else T (or RGB channels for a
last axis of 3 or 4); more outer axes are flattened into T. A 1-D array becomes a spectrum only when
its name says it is one; small arrays and scalars become metadata. Every array is checked against
what the file stores (converters.limits.check_h5) before any of it is read, and pixels are read one
band of rows at a time.
"""
from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np

from converters.base import Accounted, ConversionError, ConvertOptions, SourceFile, SourceImage, Spectrum
from converters.formats._hdf5 import DAMAGED, attr_text, attr_value, channels_of, damaged, h5_kind, open_h5, pixel_kind
from converters.limits import check_channels, check_h5
from converters.meta import clean
from converters.planes import FuncPlane

NAME = "HDF5"
EXTENSIONS = (".h5", ".hdf5", ".hdf", ".emd")
PRIORITY = 90  # after every HDF5 plugin that knows its writer's layout
HELP = ("any other HDF5 file: each numeric array of 2 or more dimensions becomes an image, attributes its "
        "metadata; imported with what is unknown (date, microscope, pixel size) to check")
UNKNOWN_WRITER = ("HDF5 written by a program we do not recognise: its arrays were read as images and its "
                  "attributes as metadata")
MAX_PLANES = 2**20  # a million planes of one image is a table, not an acquisition
MAX_IMAGES = 100  # beyond this the file is a collection (training patches), not one acquisition's images
METADATA_VALUES = 64  # arrays up to this many values are kept as metadata text
_SPECTRUM_WORDS = ("spectrum", "spectra", "eds", "edx", "eels")
_DEPTH_LABELS = ("z", "depth", "slice", "section")


def identify(head: bytes, path: Path) -> bool:
    return h5_kind(head, path, lambda f: True)


def read(files: list[Path], options: ConvertOptions) -> SourceFile:
    path = files[0]
    f = open_h5(path)
    try:
        source = _read(f, path)
    except (*DAMAGED, KeyError, ValueError, TypeError) as e:
        f.close()
        raise damaged(path, e) from None
    except BaseException:
        f.close()
        raise
    if not source.images:
        f.close()  # no pixels to read later
    return source


def _read(f: h5py.File, path: Path) -> SourceFile:
    objects: list[tuple[str, h5py.HLObject]] = [("/", f)]
    f.visititems(lambda name, obj: objects.append((name, obj)))
    metadata = {}
    for name, obj in objects:
        for key, value in obj.attrs.items():
            metadata[f"{name.strip('/')}@{key}".lstrip("@")] = _text(value)
    images, spectra, accounted = [], [], []
    for name, data in ((n, o) for n, o in objects if isinstance(o, h5py.Dataset)):
        where, kept = _place(path, name, data)
        if where == "image":
            images.append(_image(name, data))
        elif where == "spectrum":
            spectra.append(_spectrum(name, data))
            accounted.append(Accounted(f"data {name}", "attachment", f"{name} spectrum (CSV and plot)"))
        elif where == "metadata":
            metadata[name] = kept
            accounted.append(Accounted(f"data {name}", "metadata", f"the key-value {name}"))
        else:
            accounted.append(Accounted(f"data {name}", "not kept", kept))
    if not images and not spectra:
        why = "; ".join(f"{a.source[5:]}: {a.where}" for a in accounted if a.went == "not kept")
        raise ConversionError(f"{path.name} is an HDF5 file that holds no image: no numeric array of two or more "
                              f"dimensions" + (f" ({why})" if why else ""))
    images.sort(key=lambda image: -math.prod(image.shape.values()))
    accounted += [Accounted(f"data {image.title}", "not kept", f"one of {len(images):,} arrays: the {MAX_IMAGES} "
                            f"largest became images, more would flood the dataset; it stays in the original file")
                  for image in images[MAX_IMAGES:]]
    del images[MAX_IMAGES:]
    for n, image in enumerate(images):
        image.metadata = metadata
        accounted.append(Accounted(f"data {image.title}", "image",
                                   path.stem if n == 0 else f"{path.stem} [{image.title}]"))
    return SourceFile(images, spectra, accounted, metadata=metadata)


def _place(path: Path, name: str, data: h5py.Dataset) -> tuple[str, str]:
    """Where one dataset goes ("image", "spectrum", "metadata" or "not kept") and its value or the reason."""
    kind = pixel_kind(data.dtype) if data.dtype.kind in "iufc" else "other"
    image = kind == "real" and data.ndim >= 2
    if not image and data.size <= METADATA_VALUES and data.dtype.kind in "iufbSUO":
        check_h5(data, path.name, f"data {name}")
        return "metadata", _text(data[()])
    if kind != "real":
        what = {"c": "complex numbers", "V": "compound records", "S": "text", "O": "text"}.get(data.dtype.kind,
                                                                                                 str(data.dtype))
        return "not kept", f"an array of {what}, which is no image; it stays in the original file"
    if data.ndim == 1:
        if any(word in name.lower() for word in _SPECTRUM_WORDS):
            check_channels(path.name, f"the spectrum {name}", data.shape[0])
            check_h5(data, path.name, f"spectrum {name}")
            return "spectrum", ""
        return "not kept", (f"a list of {data.shape[0]:,} numbers whose name does not say it is a spectrum; "
                            "it stays in the original file")
    if min(data.shape[-2:]) < 2:
        return "not kept", f"a {'x'.join(map(str, data.shape))} array is a table, not an image"
    if math.prod(data.shape[:-2]) > MAX_PLANES:
        return "not kept", (f"a {'x'.join(map(str, data.shape))} array would be {math.prod(data.shape[:-2]):,} "
                            f"planes of {data.shape[-2]}x{data.shape[-1]}: no image stack has that many")
    check_h5(data, path.name, f"pixels of {name}")
    return "image", ""


def _image(name: str, data: h5py.Dataset) -> SourceImage:
    """One array as an image: its last two axes Y and X, its outer axes T or Z (see the module's note)."""
    dtype = channels_of(name, data)[0][1]  # 64-bit integers narrowed to what OME-TIFF stores
    dtype = np.dtype(np.float32) if dtype == np.float16 else dtype
    shape, notes = data.shape, []
    rgb = data.ndim == 3 and shape[2] in (3, 4) and min(shape[:2]) >= 16
    if rgb:
        ny, nx, nc, outer = shape[0], shape[1], shape[2], 1
    else:
        ny, nx, nc, outer = shape[-2], shape[-1], 1, math.prod(shape[:-2])
    depth = data.ndim == 3 and not rgb and (attr_text(data.dims[0].label) or "").lower() in _DEPTH_LABELS
    if data.ndim > 3:
        notes.append(f"{name.strip('/')}: its {'x'.join(map(str, shape[:-2]))} outer axes were flattened into "
                     f"{outer} time points")
    elif data.ndim == 3 and not rgb:
        notes.append(f"{name.strip('/')}: its first axis of {outer} became {'Z' if depth else 'T'}"
                     + ("" if depth else " (the file does not say whether it is time or depth)"))

    def band(index: int, channel: int):
        if rgb:
            return lambda y0, y1: data[y0:y1, :, channel]
        lead = np.unravel_index(index, shape[:-2]) if data.ndim > 2 else ()
        return lambda y0, y1: data[(*map(int, lead), slice(y0, y1), slice(None))]

    def planes():
        for i in range(outer):  # XYZCT: one of Z or T is 1 here
            for c in range(nc):
                yield FuncPlane((ny, nx), dtype, band(i, c))

    return SourceImage(
        shape={"T": 1 if depth else outer, "C": nc, "Z": outer if depth else 1, "Y": ny, "X": nx}, dtype=dtype,
        planes=planes, channels=["red", "green", "blue", "alpha"][:nc] if rgb else [name.strip("/")],
        notes=notes, close=data.file.close, title=name.strip("/"), warnings=[UNKNOWN_WRITER],
    )


def _spectrum(name: str, data: h5py.Dataset) -> Spectrum:
    """A 1-D array whose name says spectrum; its calibration only when its own attributes give one."""
    offset, scale = attr_value(data.attrs.get("offset")), attr_value(data.attrs.get("scale"))
    unit = attr_text(data.attrs.get("units")) or attr_text(data.attrs.get("unit")) or ""
    calibrated = unit and isinstance(offset, (int, float)) and isinstance(scale, (int, float))
    return Spectrum(name, np.asarray(data[()]), float(offset) if calibrated else 0.0,
                    float(scale) if calibrated else 1.0, unit if calibrated else "", f"data {name}")


def _text(value) -> str:
    """An attribute or small dataset as metadata text; long arrays by their shape only."""
    value = attr_value(value)
    if isinstance(value, np.ndarray):
        if value.size > METADATA_VALUES:
            return f"<{'x'.join(map(str, value.shape))} array of {value.dtype}>"
        value = [attr_value(v) for v in value.reshape(-1)]
    return clean(value)
