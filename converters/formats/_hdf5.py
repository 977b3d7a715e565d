"""HDF5 helpers for the EMD plugins: safe opening, the channels an image array gives (complex data as
amplitude and phase, 64-bit integers narrowed)."""
from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from converters.base import ConversionError
from converters.limits import blocks, check_h5

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
CHUNK_CACHE = 64 * 2**20  # one frame-sized chunk stays cached while its bands are read
MIRRORED_BYTES = 2**20  # datasets up to this size are copied into a normalised view; larger ones are shapes only


def open_h5(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r", rdcc_nbytes=CHUNK_CACHE)
    except OSError as e:
        raise ConversionError(f"{path.name} is not a readable HDF5 (EMD) file: {e}") from None


# what h5py raises on a damaged B-tree, heap or object header met while a plugin walks the file
DAMAGED = (OSError, RuntimeError)


def damaged(path: Path, error: Exception) -> ConversionError:
    return ConversionError(f"{path.name}: its HDF5 structure cannot be read ({type(error).__name__}: {error}); "
                           f"it may be damaged or incomplete")


def h5_kind(head: bytes, path: Path, test: Callable[[h5py.File], bool]) -> bool:
    """True when the file starts with the HDF5 signature and its layout passes `test`.

    A file cut short is refused here, by its own header: HDF5 opens none, so no layout test could tell
    what it is, and "not a valid EMD file" would send its owner looking for the wrong fault."""
    if not head.startswith(HDF5_MAGIC):
        return False
    _refuse_truncated(head, path)
    try:
        with h5py.File(path, "r") as f:
            return bool(test(f))
    except (*DAMAGED, KeyError, ValueError, TypeError):
        return False


def _refuse_truncated(head: bytes, path: Path) -> None:
    """Refuse an HDF5 file shorter than the end-of-file address its superblock records (HDF5 file format
    specification, "Superblock": versions 0 and 1 put it after two addresses from byte 24 or 28, versions
    2 and 3 after two from byte 12; addresses count from the base address)."""
    if len(head) < 14:
        raise ConversionError(f"{path.name} is truncated inside its HDF5 header (the file holds {len(head)} bytes)")
    version = head[8]
    if version in (0, 1):
        width, at = head[13], 24 if version == 0 else 28
    elif version in (2, 3):
        width, at = head[9], 12
    else:
        return  # a version this check does not know: h5py decides
    if width not in (2, 4, 8):
        return  # a damaged header, not a short file: h5py says what it makes of it
    if len(head) < at + 3 * width:
        raise ConversionError(f"{path.name} is truncated inside its HDF5 header (the file holds {len(head)} bytes)")
    base = int.from_bytes(head[at:at + width], "little")
    end = int.from_bytes(head[at + 2 * width:at + 3 * width], "little")
    if end == (1 << 8 * width) - 1:
        return  # the "undefined address": no end recorded, nothing to compare
    declared = base + end
    held = path.stat().st_size
    if held < declared:
        raise ConversionError(f"{path.name} is truncated: its HDF5 header says {declared} bytes, the file holds "
                              f"{held} (an interrupted copy?)")


def pixel_kind(dtype: np.dtype) -> str:
    """"real", "complex" (numpy complex or Velox's {realFloat, imagFloat} compound) or "other"."""
    if dtype.kind in "iuf" and dtype.itemsize <= 8:
        return "real"
    if dtype.kind == "c" or (dtype.names and len(dtype.names) == 2 and all(dtype[n].kind == "f" for n in dtype.names)):
        return "complex"
    return "other"


def as_complex(data: np.ndarray) -> np.ndarray:
    if data.dtype.names:
        real, imag = data.dtype.names
        return data[real] + 1j * data[imag].astype(np.result_type(data[imag].dtype, np.float32))
    return data


def complex_parts(read: Callable[[int, int], np.ndarray], dtype: np.dtype):
    """Two row readers, amplitude and phase (radians), of the float type matching the complex one."""
    real = np.dtype(dtype[dtype.names[0]]) if dtype.names else np.dtype(f"f{dtype.itemsize // 2}")
    out = np.float64 if real.itemsize == 8 else np.float32

    def amplitude(y0: int, y1: int) -> np.ndarray:
        return np.abs(as_complex(read(y0, y1))).astype(out)

    def phase(y0: int, y1: int) -> np.ndarray:
        return np.angle(as_complex(read(y0, y1))).astype(out)

    return np.dtype(out), amplitude, phase


def channels_of(name: str, data: h5py.Dataset) -> list[tuple[str, np.dtype, Callable[[Callable], Callable]]]:
    """The channels one image array gives: itself, or the amplitude and phase of complex data.

    Each comes with its pixel type and a function that turns a row reader of the stored array
    into the channel's row reader.
    """
    if pixel_kind(data.dtype) == "complex":
        dtype, _, _ = complex_parts(lambda y0, y1: None, data.dtype)
        return [(f"{name} amplitude", dtype, lambda read: complex_parts(read, data.dtype)[1]),
                (f"{name} phase", dtype, lambda read: complex_parts(read, data.dtype)[2])]
    return [(name, _pixel_type(data), lambda read: read)]


def _pixel_type(data: h5py.Dataset) -> np.dtype:
    dtype = np.dtype(data.dtype).newbyteorder("=")
    if dtype.itemsize == 8 and dtype.kind in "iu":
        # OME has no 64-bit integer pixels: the narrowest type that holds this array's values, scanned
        # only once the array is known to hold what it declares (a sparse one would read zeros for hours)
        check_h5(data, Path(data.file.filename).name, "pixels")
        low, high = _range(data)
        for candidate in ("u1", "i1", "u2", "i2", "u4", "i4"):
            if np.iinfo(candidate).min <= low and high <= np.iinfo(candidate).max:
                return np.dtype(candidate)
        raise ConversionError(f"{data.name} holds 64-bit integers beyond what OME-TIFF can store "
                              f"({low}..{high}); convert them to floating point first")
    return dtype


def _range(data: h5py.Dataset) -> tuple[int, int]:
    """Minimum and maximum of an array, read a bounded block at a time."""
    low, high = 0, 0
    for index in blocks(data.shape):
        block = data[index]
        if block.size:
            low, high = min(low, int(block.min())), max(high, int(block.max()))
    return low, high


def attr_value(value):
    """An HDF5 attribute (or small dataset) value as plain Python, whatever form its writer chose: text
    as str (from str, bytes, numpy bytes or str), numbers as int or float (from numpy scalars), and a
    one-element array as its element. Longer arrays stay arrays."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value


def attr_text(value) -> str | None:
    """An attribute as text; None when absent or not text."""
    value = attr_value(value)
    return value if isinstance(value, str) else None


def normalised_view(f: h5py.File) -> h5py.File:
    """An in-memory copy of the file's layout with every attribute in plain form (see attr_value), for
    readers that expect one form only (rsciio.emd calls .decode() on any non-str unit and fails on a
    one-element array). Small datasets (axis vectors, metadata) are copied; larger ones keep their
    shape and type but no data: pixels are read from the file itself, never from the view."""
    view = h5py.File(f"{uuid.uuid4().hex}.h5", "w", driver="core", backing_store=False)
    _mirror(f, view)
    return view


def _mirror(source: h5py.Group, target: h5py.Group) -> None:
    _copy_attrs(source, target)
    for name in source:
        if isinstance(source.get(name, getlink=True), h5py.ExternalLink):
            continue  # another file: not ours to open
        item = source[name]
        if isinstance(item, h5py.Group):
            _mirror(item, target.create_group(name))
        elif isinstance(item, h5py.Dataset):
            if item.size * item.dtype.itemsize <= MIRRORED_BYTES:
                source.file.copy(item, target, name=name, without_attrs=True)
            else:
                target.create_dataset(name, shape=item.shape, dtype=item.dtype, chunks=True)
            _copy_attrs(item, target[name])


def _copy_attrs(source, target) -> None:
    for key, value in source.attrs.items():
        target.attrs[key] = attr_value(value)
