"""Berkeley (NCEM) EMD: HDF5 groups marked emd_group_type=1, each a `data` array with dim1..dimN.

RosettaSciIO (rsciio.emd) is the reader of record: signal titles, axes with scales and units (it reads
Berkeley's spelled-apart units, "[n_m]" is nm) and the original metadata. Images (2-D), stacks (3-D,
time or depth) and 4-D data (its two outer axes as time and depth) become images; several of one
shape are channels of one image, other shapes images of their own; 1-D data is a spectrum.

Acquisition time, tried in this order: a time axis whose values are Unix seconds (its first value),
then an attribute or a small dataset of Unix seconds named like a time ("start_time", "timestamp",
"date") in the microscope, comments, user or sample group. Berkeley EMD defines no date field; without
one the date is unknown.

Writers store attributes as str, bytes, numpy scalars or one-element arrays; RosettaSciIO reads one
form, so it is given a normalised view of the layout (_hdf5.normalised_view) and we read pixels and
spectra from the file itself.
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np

from converters.base import Accounted, ConversionError, ConvertOptions, SourceFile, SourceImage, Spectrum
from converters.formats._hdf5 import DAMAGED, attr_value, channels_of, damaged, h5_kind, normalised_view, open_h5, pixel_kind
from converters.formats._rsciio import axis_size, has_unit, read_signals, seconds, unix_time, z_step
from converters.limits import check_channels, check_h5
from converters.meta import flatten, pixel_size, to_metres
from converters.planes import FuncPlane, common_dtype
from converters.registry import unique_names

NAME = "Berkeley EMD"
EXTENSIONS = (".emd", ".h5")  # HyperSpy and ncempy write Berkeley EMD under both
HELP = "NCEM, HyperSpy and py4DSTEM files: images, stacks and 4-D data become images, 1-D data spectra"
PRIORITY = 20
READERS = ("rsciio.emd",)
UNIX_2000 = 946684800  # a time axis starting later than 2000-01-01 counts Unix seconds, not a duration
_METADATA_GROUPS = ("microscope", "comments", "user", "sample")
_TIME_WORDS = ("time", "date")


def identify(head: bytes, path: Path) -> bool:
    return h5_kind(head, path, lambda f: bool(_datasets(f)) or "version_major" in f.attrs)


def read(files: list[Path], options: ConvertOptions) -> SourceFile:
    path = files[0]
    f = open_h5(path)
    try:
        return _read(f, path)
    except (KeyError, ValueError, TypeError, IndexError) as e:
        f.close()
        raise ConversionError(f"{path.name}: the EMD layout is damaged ({type(e).__name__}: {e})") from None
    except DAMAGED as e:
        f.close()
        raise damaged(path, e) from None
    except BaseException:
        f.close()
        raise


def _datasets(f: h5py.File) -> list[h5py.Dataset]:
    found = []
    f.visititems(lambda name, obj: found.append(obj["data"]) if isinstance(obj, h5py.Group)
                 and attr_value(obj.attrs.get("emd_group_type")) == 1 and isinstance(obj.get("data"), h5py.Dataset) else None)
    return found


def _read(f: h5py.File, path: Path) -> SourceFile:
    datasets = _datasets(f)
    if not datasets:
        raise ConversionError(f"{path.name} holds no EMD data group (emd_group_type 1 with a 'data' array)")
    for data in datasets:  # before rsciio reads any of them (and their axes) or we scan one
        for item in [data, *(v for k, v in data.parent.items() if k.startswith("dim") and isinstance(v, h5py.Dataset))]:
            check_h5(item, path.name, f"data {item.name}")
        if data.ndim == 1:
            check_channels(path.name, f"the spectrum {data.name}", data.shape[0])
    # one rsciio signal per dataset, in our order, so that each maps to the array we read pixels from
    with normalised_view(f) as view:
        refs = read_signals(view, path, dataset_path=[d.name.lstrip("/") for d in datasets], stack_group=False)
    if len(refs) != len(datasets):
        raise ConversionError(f"{path.name}: RosettaSciIO reads {len(refs)} of its {len(datasets)} data arrays")
    titles = unique_names([_title(ref, d) for ref, d in zip(refs, datasets)])
    signals, spectra, accounted = [], [], []
    for title, data, ref in zip(titles, datasets, refs):
        if data.ndim == 1 and pixel_kind(data.dtype) == "real":
            spectra.append(_spectrum(title, ref, data))
            accounted.append(Accounted(f"spectrum {title}", "attachment", f"{title} spectrum (CSV and plot)"))
        elif 2 <= data.ndim <= 4 and pixel_kind(data.dtype) != "other":
            signals.append((title, data, ref))
        else:
            accounted.append(Accounted(f"data {title}", "not kept", f"a {data.ndim}-D {data.dtype} array is neither "
                                       f"an image, a stack nor a spectrum; it stays in the original file"))
    images = []
    if signals:
        stem = path.stem
        shape = Counter(d.shape for _, d, _ in signals).most_common(1)[0][0]
        primary = [s for s in signals if s[1].shape == shape]
        images.append(_image(primary, None, f))
        accounted[:0] = [Accounted(f"data {t}", "channel", f"{stem}: {', '.join(c[0] for c in channels_of(t, d))}")
                         for t, d, _ in primary]
        for signal in signals:
            if signal[1].shape != shape:
                images.append(_image([signal], signal[0], f))
                accounted.append(Accounted(f"data {signal[0]}", "image", f"{stem} [{signal[0]}]"))
    om = refs[0]["original_metadata"]
    stamp = _metadata_time(f)
    for image in images:
        image.acquired = image.acquired or stamp
    source = SourceFile(images, spectra, accounted, acquired=stamp, microscope=_microscope(om), metadata=flatten(om))
    if not images:
        f.close()  # no pixels to read later
    return source


def _title(ref: dict, data: h5py.Dataset) -> str:
    title = ref["metadata"]["General"].get("title") or ""
    # HyperSpy writes "__unnamed__" for a signal without a title
    return "data" if title in ("", "__unnamed__") else title


def _spectrum(title: str, ref: dict, data: h5py.Dataset) -> Spectrum:
    axis = ref["axes"][0]
    unit = str(axis["units"]) if has_unit(axis.get("units")) else ""
    counts = np.asarray(data[...])
    return Spectrum(title, counts, float(axis["offset"]) if unit else 0.0, float(axis["scale"]) if unit else 1.0,
                    unit, f"data {title}")


def _image(signals, title: str | None, f: h5py.File) -> SourceImage:
    """One image whose channels are these signals, all of one shape (rsciio's axis order: slowest first).

    Outer axes beyond (Y, X): one is time when its unit or name says so, else depth; of two, the
    first is time and the second depth.
    """
    first = signals[0][2]
    axes = first["axes"]
    outer = axes[:-2]
    ny, nx = axes[-2]["size"], axes[-1]["size"]
    time = outer[0] if len(outer) == 2 or (outer and _is_time(outer[0])) else None
    depth = outer[-1] if outer and outer[-1] is not time else None
    nt, nz = (time["size"] if time else 1), (depth["size"] if depth else 1)

    layers = [(data, channel) for name, data, _ in signals for channel in channels_of(name, data)]
    channels = [channel[0] for _, channel in layers]
    dtype = common_dtype([channel[1] for _, channel in layers])

    def planes():
        for t in range(nt):  # XYZCT: Z fastest, then C, then T
            for data, (_, _, channel_rows) in layers:
                for z in range(nz):
                    yield FuncPlane((ny, nx), dtype, channel_rows(_band(data, ((t,) if time else ()) + ((z,) if depth else ()))))

    size, calibration, warnings = axis_size(axes)
    if size is not None and depth is not None and z_step(depth):
        size = pixel_size(to_metres(size.x, size.unit), to_metres(size.y, size.unit), z_step(depth))
    # a stack axis OME cannot hold (a depth that is no length, a time that is no duration) stays as key-values
    odd = {f"Axis {axis.get('name') or i}": f"{axis['size']} steps of {float(axis['scale']):.6g} "
           f"{axis.get('units') if has_unit(axis.get('units')) else ''}".strip()
           for i, axis in enumerate(outer)
           if not (axis is time and seconds(1, axis.get("units"))) and not (axis is depth and z_step(axis))}
    om = first["original_metadata"]
    return SourceImage(
        shape={"T": nt, "C": len(channels), "Z": nz, "Y": ny, "X": nx}, dtype=dtype, planes=planes,
        channels=channels, pixel_size=size, acquired=_acquired(time), microscope=_microscope(om),
        metadata=calibration | odd | flatten(om),
        time_increment=seconds(time["scale"], time.get("units")) if time is not None else None,
        close=f.close, title=title, warnings=warnings,
    )


def _is_time(axis: dict) -> bool:
    return seconds(1, axis.get("units")) is not None or "time" in str(axis.get("name") or "").lower()


def _acquired(time: dict | None) -> datetime | None:
    """The first value of a time axis that counts Unix seconds (see the module's note)."""
    if time is None or seconds(1, time.get("units")) is None:
        return None
    start = seconds(time["offset"], time["units"])
    return unix_time(start) if start and start > UNIX_2000 else None


def _metadata_time(f: h5py.File) -> datetime | None:
    """Unix seconds kept as an attribute or a small dataset of a metadata group (see the module's note)."""
    for group in (f.get(name) for name in _METADATA_GROUPS):
        if not isinstance(group, h5py.Group):
            continue
        values = list(group.attrs.items()) + [(k, v[()]) for k, v in group.items()
                                               if isinstance(v, h5py.Dataset) and v.size == 1]
        for key, value in values:
            value = attr_value(value)
            if any(word in key.lower() for word in _TIME_WORDS) and isinstance(value, (int, float)) \
                    and value > UNIX_2000:
                return unix_time(value)
    return None


def _microscope(om: dict) -> str | None:
    scope = om.get("microscope")
    name = scope.get("name") if isinstance(scope, dict) else None
    return str(name).strip() or None if name is not None else None


def _band(data: h5py.Dataset, outer: tuple[int, ...]):
    """Rows y0..y1 of one plane, sliced from the stored array so that a band reads only its rows.

    Berkeley EMD stores the fastest axis first, (X, Y, ...) described by dim1.., which rsciio
    transposes; files with a dim0 (py4DSTEM) store (..., Y, X) as they are.
    """
    if "dim0" in data.parent:
        return lambda y0, y1: np.asarray(data[outer + (slice(y0, y1), slice(None))])
    index = tuple(reversed(outer))
    return lambda y0, y1: np.asarray(data[(slice(None), slice(y0, y1)) + index]).T
