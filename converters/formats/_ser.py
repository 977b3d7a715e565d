"""Read the header and frame index of a TIA .ser file, checking every size against the file.

Format (little-endian): ByteOrder 0x4949, SeriesID 0x0197, SeriesVersion 0x0210 (32-bit offsets)
or 0x0220 (64-bit), DataTypeID (0x4120 spectra, 0x4122 images), TagTypeID, TotalNumberElements,
ValidNumberElements, OffsetArrayOffset, NumberDimensions, then the dimension arrays; at
OffsetArrayOffset the data offsets then the tag offsets. Each image element starts with a 50-byte
calibration header (offset/delta/element for X and Y, data type, width, height) before its pixels;
each spectrum element with a 26-byte one (offset/delta/element, data type, length).
RosettaSciIO reads these files too, but always whole into memory (its lazy read included): this
reader fills that gap by indexing elements, so frames and spectra can be read one at a time.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.base import ConversionError
from converters.limits import check_channels

SER_MAGIC = b"II\x97\x01"
IMAGE_TYPE, SPECTRUM_TYPE = 0x4122, 0x4120
_ELEMENT = struct.Struct("<ddIddIHII")  # the 50-byte image element header
_SPECTRUM = struct.Struct("<ddIHI")  # the 26-byte spectrum element header
_DTYPES = {1: "<u1", 2: "<u2", 3: "<u4", 4: "<i1", 5: "<i2", 6: "<i4", 7: "<f4", 8: "<f8", 9: "<c8", 10: "<c16"}


@dataclass
class Series:
    path: Path
    data_type: int
    frames: int  # valid elements
    offsets: list[int]  # file offset of each frame's pixels
    shape: tuple[int, int]  # (Y, X)
    dtype: np.dtype
    delta: tuple[float, float]  # per pixel (X, Y) from the first frame's calibration, in m (or 1/m)
    header: dict[str, str]
    energy: tuple[float, float] = (0.0, 0.0)  # spectra: offset and width of a channel (eV)
    time: int | None = None  # the first element's time tag: Unix seconds (UTC) when it was stored


def read_series(path: Path) -> Series:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(34)
        if len(head) < 30 or head[:4] != SER_MAGIC:
            raise ConversionError(f"{path.name} is not a TIA .ser file (it does not start with the SER signature)")
        _, _, version, data_type, tag_type, total, valid = struct.unpack_from("<HHHIIII", head)
        if version not in (0x210, 0x220):
            raise ConversionError(f"{path.name}: SER version {version:#x} is not supported (0x210 and 0x220 are)")
        wide = version == 0x220
        if wide and len(head) < 34:
            raise ConversionError(f"{path.name} is truncated inside its header")
        offset_array, ndim = struct.unpack_from("<QI" if wide else "<II", head, 22)
        header = {"SeriesVersion": hex(version), "DataTypeID": hex(data_type), "TagTypeID": hex(tag_type),
                  "TotalNumberElements": str(total), "ValidNumberElements": str(valid), "NumberDimensions": str(ndim)}
        if data_type not in (IMAGE_TYPE, SPECTRUM_TYPE):
            raise ConversionError(f"{path.name}: SER data type {data_type:#x} is neither images nor spectra")
        entry = 8 if wide else 4
        if valid > total or total * entry * 2 > size or ndim > 16:
            raise ConversionError(
                f"{path.name}: the header is damaged ({valid} valid of {total} elements, {ndim} dimensions "
                f"in a {size}-byte file)"
            )
        f.seek(offset_array)
        raw = f.read(valid * entry)
        if len(raw) != valid * entry:
            raise ConversionError(f"{path.name} is truncated: its frame index (at byte {offset_array}) is cut off")
        offsets = list(np.frombuffer(raw, "<u8" if wide else "<u4").astype(np.int64))
        if not offsets:
            raise ConversionError(f"{path.name} holds no frame (0 valid elements)")
        time = _first_time(f, offset_array + total * entry, wide, tag_type)
        if data_type == SPECTRUM_TYPE:
            return _spectra(f, path, valid, offsets, size, header, time)
        frames = []
        for index, start in enumerate(offsets):
            f.seek(start)
            element = f.read(_ELEMENT.size)
            if len(element) != _ELEMENT.size:
                raise _truncated(path, valid, frames, index)
            _, dx, _, _, dy, _, dtype_code, nx, ny = _ELEMENT.unpack(element)
            if dtype_code not in _DTYPES:
                raise ConversionError(f"{path.name}: frame {index} has unknown pixel type code {dtype_code}")
            dtype = np.dtype(_DTYPES[dtype_code])
            if start + _ELEMENT.size + nx * ny * dtype.itemsize > size:
                raise _truncated(path, valid, frames, index, (nx, ny))
            if index == 0:
                _apart(path, offsets, _ELEMENT.size + nx * ny * dtype.itemsize, "frames")
            if frames and (ny, nx, dtype) != frames[0][1:4]:
                raise ConversionError(
                    f"{path.name}: frame {index} is {nx}x{ny} {dtype}, frame 0 is "
                    f"{frames[0][2]}x{frames[0][1]} {frames[0][3]}; frames of one series must match"
                )
            frames.append((start + _ELEMENT.size, ny, nx, dtype, dx, dy))
    _, ny, nx, dtype, dx, dy = frames[0]
    if nx == 0 or ny == 0:
        raise ConversionError(f"{path.name}: its frames are empty ({nx}x{ny} pixels)")
    header.update(CalibrationDeltaX=repr(dx), CalibrationDeltaY=repr(dy))
    return Series(path, data_type, valid, [fr[0] for fr in frames], (ny, nx), dtype, (dx, dy), header, time=time)


def _spectra(f, path: Path, valid: int, offsets: list[int], size: int, header: dict[str, str], time) -> Series:
    """Index the spectra of a spectrum series, checking that all have the first one's length and type."""
    first = None
    for index, start in enumerate(offsets):
        f.seek(start)
        element = f.read(_SPECTRUM.size)
        if len(element) != _SPECTRUM.size:
            raise _truncated(path, valid, [], index)
        offset, delta, _, dtype_code, length = _SPECTRUM.unpack(element)
        if dtype_code not in _DTYPES or np.dtype(_DTYPES[dtype_code]).kind == "c":
            raise ConversionError(f"{path.name}: spectrum {index} has unsupported value type code {dtype_code}")
        dtype = np.dtype(_DTYPES[dtype_code])
        if start + _SPECTRUM.size + length * dtype.itemsize > size:
            raise ConversionError(f"{path.name} is truncated: header says {valid} spectra, file holds {index}")
        if first is None:
            check_channels(path.name, "its spectrum", length)
            _apart(path, offsets, _SPECTRUM.size + length * dtype.itemsize, "spectra")
            first = (length, dtype, offset, delta)
        elif (length, dtype) != first[:2]:
            raise ConversionError(f"{path.name}: spectrum {index} has {length} {dtype} channels, spectrum 0 has "
                                  f"{first[0]} {first[1]}; spectra of one series must match")
    length, dtype, offset, delta = first
    if length == 0:
        raise ConversionError(f"{path.name}: its spectra are empty (0 channels)")
    header.update(CalibrationOffset=repr(offset), CalibrationDelta=repr(delta), ArrayLength=str(length))
    return Series(path, SPECTRUM_TYPE, valid, [o + _SPECTRUM.size for o in offsets], (1, length), dtype, (0, 0),
                  header, energy=(offset, delta), time=time)


def _first_time(f, tag_table: int, wide: bool, tag_type: int) -> int | None:
    """The time tag of the first element (tag types 0x4152 time, 0x4142 time and position); None if absent."""
    if tag_type not in (0x4152, 0x4142):
        return None
    f.seek(tag_table)
    raw = f.read(8 if wide else 4)
    if len(raw) != (8 if wide else 4):
        return None
    f.seek(int.from_bytes(raw, "little"))
    tag = f.read(8)
    if len(tag) != 8:
        return None
    stored_type, _, time = struct.unpack("<HHI", tag)
    return time if stored_type == tag_type else None


def _apart(path: Path, offsets: list[int], extent: int, what: str) -> None:
    """Refuse elements that overlap (a damaged index, or one that points every element at the same
    bytes): each element is then read once, and reading a series never reads more than the file."""
    order = np.sort(np.asarray(offsets, np.int64))
    close = np.flatnonzero(np.diff(order) < extent)
    if close.size:
        a, b = int(order[close[0]]), int(order[close[0] + 1])
        raise ConversionError(f"{path.name}: its {what} overlap: one of {extent:,} bytes starts at byte {a:,}, "
                              f"another at byte {b:,}; the file's index is damaged")


def sum_spectrum(series: Series) -> np.ndarray:
    """The sum of every spectrum of a series (a single spectrum: itself), read one spectrum at a time."""
    length = series.shape[1]
    total = np.zeros(length, np.float64)
    with open(series.path, "rb") as f:
        for start in series.offsets:
            f.seek(start)
            total += np.fromfile(f, series.dtype, length)
    return total


def _truncated(path: Path, valid: int, frames: list, index: int, dims: tuple[int, int] | None = None):
    if dims is None and frames:
        dims = (frames[0][2], frames[0][1])
    shape = f" of {dims[0]}x{dims[1]}" if dims else ""
    return ConversionError(f"{path.name} is truncated: header says {valid} frames{shape}, file holds {index}")
