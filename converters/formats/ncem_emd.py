"""Berkeley (NCEM) EMD: HDF5 groups marked emd_group_type=1, each a `data` array with dim1..dimN.

Arrays are stored with the fastest axis first (rsciio and ncempy's writer transpose): a 2-D image
is stored (X, Y), a stack (X, Y, N). dim1 describes X, dim2 Y, dim3 the stack axis; units are
written one character apart ("[n_m]"). Several images of one shape become channels; spectra and
4-D data are left out and named in the notes.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import h5py
import numpy as np

from converters.base import ConversionError, ConvertOptions, SourceImage
from converters.formats._hdf5 import complex_parts, h5_kind, open_h5, pixel_kind
from converters.meta import clean, flatten, pixel_size, to_metres
from converters.planes import FuncPlane, common_dtype

NAME = "Berkeley EMD"
EXTENSIONS = (".emd",)
PRIORITY = 20


def identify(head: bytes, path: Path) -> bool:
    return h5_kind(head, path, lambda f: bool(_signals(f)) or "version_major" in f.attrs)


def read(files: list[Path], options: ConvertOptions) -> SourceImage:
    path = files[0]
    f = open_h5(path)
    try:
        return _read(f, path)
    except (KeyError, ValueError, TypeError, IndexError) as e:
        f.close()
        raise ConversionError(f"{path.name}: the EMD layout is damaged ({type(e).__name__}: {e})") from None
    except BaseException:
        f.close()
        raise


def _signals(f: h5py.File) -> list[h5py.Group]:
    found = []
    f.visititems(lambda name, obj: found.append(obj) if isinstance(obj, h5py.Group)
                 and obj.attrs.get("emd_group_type") == 1 and isinstance(obj.get("data"), h5py.Dataset) else None)
    return found


def _read(f: h5py.File, path: Path) -> SourceImage:
    notes, images = [], []
    for group in _signals(f):
        data = group["data"]
        name = group.name.rsplit("/", 1)[-1]
        if data.ndim not in (2, 3) or pixel_kind(data.dtype) == "other":
            notes.append(f"left out {name}: a {data.ndim}-D {data.dtype} signal is not an image or image stack")
            continue
        images.append((name, group, data))
    if not images:
        raise ConversionError(f"{path.name} holds no image ({'; '.join(notes) or 'no EMD data group'})")
    shape = Counter(d.shape for _, _, d in images).most_common(1)[0][0]
    for name, _, data in images:
        if data.shape != shape:
            notes.append(f"left out {name}: its shape {data.shape[::-1]} differs from {shape[::-1]}")
    images = [i for i in images if i[2].shape == shape]
    nx, ny = shape[0], shape[1]
    frames = shape[2] if len(shape) == 3 else 1

    first = images[0][1]
    axis = "T"
    if frames > 1:
        stack_name, stack_units = _dim(first, 3)
        axis = "T" if "time" in stack_name.lower() or stack_units in ("s", "ms", "µs", "ns") else "Z"

    readers, channels, dtypes = [], [], []
    for name, _, data in images:
        if pixel_kind(data.dtype) == "complex":
            dtype, _, _ = complex_parts(lambda y0, y1: None, data.dtype)
            readers += [(data, "amplitude"), (data, "phase")]
            channels += [f"{name} amplitude", f"{name} phase"]
            dtypes += [dtype, dtype]
        else:
            readers.append((data, "real"))
            channels.append(name)
            dtypes.append(np.dtype(data.dtype).newbyteorder("="))
    dtype = common_dtype(dtypes)

    def planes():
        # XYZCT order: with a Z stack, Z varies fastest within a channel
        order = [(k, c) for k in range(frames) for c in range(len(readers))] if axis == "T" else \
            [(k, c) for c in range(len(readers)) for k in range(frames)]
        for k, c in order:
            data, how = readers[c]
            read = _band(data, k, len(shape) == 3)
            if how != "real":
                _, amplitude, phase = complex_parts(read, data.dtype)
                read = amplitude if how == "amplitude" else phase
            yield FuncPlane((ny, nx), dtype, read)

    (_, x_units), (_, y_units) = _dim(first, 1), _dim(first, 2)
    x = to_metres(_step(first, 1), x_units) if x_units else None
    y = to_metres(_step(first, 2), y_units) if y_units else None
    z = to_metres(_step(first, 3), _dim(first, 3)[1]) if axis == "Z" and frames > 1 else None
    microscope = f.get("microscope")
    metadata = flatten({"root": _attrs(f)} | {g: _attrs(f[g]) for g in ("microscope", "user", "sample", "comments")
                                              if isinstance(f.get(g), h5py.Group)})
    for name, group, _ in images:
        metadata.update({f"{name}.{k}": v for k, v in flatten(_attrs(group)).items()})
    return SourceImage(
        shape={"T": frames if axis == "T" else 1, "C": len(channels), "Z": frames if axis == "Z" else 1,
               "Y": ny, "X": nx},
        dtype=dtype, planes=planes, channels=channels, pixel_size=pixel_size(x, y, z),
        microscope=_text(microscope.attrs.get("name")) if isinstance(microscope, h5py.Group) else None,
        metadata=metadata, notes=notes, close=f.close,
    )


def _band(data: h5py.Dataset, k: int, stack: bool):
    if stack:
        return lambda y0, y1: data[:, y0:y1, k].T
    return lambda y0, y1: data[:, y0:y1].T


def _dim(group: h5py.Group, n: int) -> tuple[str, str]:
    dim = group.get(f"dim{n}")
    if not isinstance(dim, h5py.Dataset):
        return "", ""
    units = _text(dim.attrs.get("units"))
    if re.fullmatch(r"\[.*\]", units):  # "[n_m]" is how Berkeley EMD spells "nm"
        units = units[1:-1].replace("_", "")
    return _text(dim.attrs.get("name")), units


def _step(group: h5py.Group, n: int) -> float | None:
    dim = group.get(f"dim{n}")
    if not isinstance(dim, h5py.Dataset) or dim.ndim != 1 or dim.shape[0] < 2:
        return None
    first, second = dim[:2]
    return float(second) - float(first)


def _text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
        value = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return clean(value) if value is not None else ""


def _attrs(obj) -> dict[str, str]:
    return {clean(k): _text(v) if not isinstance(v, np.ndarray) or v.size == 1 else clean(v.tolist())
            for k, v in obj.attrs.items()}
