"""MRC and MRCS, with an optional ATLAS/EPU `MicroscopeImage` XML or Direct Electron `_info.txt`.

Pixels come from the MRC; the facts from the best source present: the EPU XML (calibrated pixel,
date, microscope), then the FEI extended header, then a Direct Electron info file (camera, Unix
time, pixel size), then the standard header's voxel size when it is a real one. mrcfile (permissive) reads the headers; the pixels are
read section by section at their offset, after the header's sizes have been checked against the file.
"""
from __future__ import annotations

import struct
import warnings
from pathlib import Path

import mrcfile
import numpy as np
from mrcfile.utils import byte_order_from_machine_stamp, data_dtype_from_header

from converters.base import ConversionError, ConvertOptions, SourceImage
from converters.formats._de import DeInfo, read_info
from converters.formats._epu import EpuImage, read_xml
from converters.formats._hdf5 import complex_parts
from converters.formats._raw import stacked_planes
from converters.meta import clean, pixel_size, unknowns

NAME = "MRC"
EXTENSIONS = (".mrc", ".mrcs")
HELP = ("cryo-EM images, stacks and Direct Electron movies; the ATLAS/EPU XML or the Direct Electron info file "
        "beside it gives the metadata, else the header's voxel size")
# Direct Electron writes one info file per acquisition, named without the movie's number (rsciio's MOVIE_RE):
# 20250429_06699_info.txt describes 20250429_06699_0_movie.mrc, its _final sum and its virtual images
# (20250429_06699_0_Virt #0_total_sum.mrc): shared, each MRC's job gets a copy of it.
SIDECARS = (
    {"primary": "{stem}.mrc", "name": "{stem}.xml", "what": "ATLAS/EPU metadata file"},  # EPU writes .mrc
    {"primary": "{prefix}_{image}.mrc", "name": "{prefix}_info.txt", "what": "Direct Electron info file",
     "shared": True},
)
_MODES = {0, 1, 2, 3, 4, 6, 12}  # 101 (4-bit packed) is refused by its own message
MAX_SIDE = 2**20
DEFAULT_VOXEL = 1.0  # Å: what many writers put in a header that was never calibrated


def identify(head: bytes, path: Path) -> bool:
    if len(head) < 16:
        return False
    if head[208:212] == b"MAP ":
        return True
    # older MRC files carry no stamp: accept a header whose sizes and mode make sense
    for order in "<>":
        nx, ny, nz, mode = struct.unpack_from(order + "4i", head)
        if mode in _MODES | {101} and all(0 < n <= MAX_SIDE for n in (nx, ny, nz)):
            return True
    return False


def read(files: list[Path], options: ConvertOptions) -> SourceImage:
    """The MRC (first), with the EPU XML or the Direct Electron info file when one came with it."""
    xmls = [f for f in files[1:] if f.suffix.lower() == ".xml"]
    infos = [f for f in files[1:] if f.suffix.lower() == ".txt"]
    xml = read_xml(xmls[0], options.timezone) if xmls else EpuImage()
    return _image(files[0], xml, read_info(infos[0]) if infos else None)


def _image(mrc_path: Path, xml: EpuImage, info: DeInfo | None) -> SourceImage:
    _precheck(mrc_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with mrcfile.open(mrc_path, header_only=True, permissive=True) as mrc:
                header = mrc.header.copy()
                voxel = mrc.voxel_size.copy()
                fei = _fei_fields(mrc)
        except (ValueError, OSError) as e:
            raise ConversionError(f"{mrc_path.name} is not a readable MRC file: {e}") from None
    notes = [f"{mrc_path.name}: {w.message}" for w in caught if "Map ID string" not in str(w.message)]
    if int(header.mode) == 101:
        raise ConversionError(f"{mrc_path.name}: 4-bit packed MRC (mode 101) is not supported")
    try:
        stored = data_dtype_from_header(header)
    except ValueError as e:
        raise ConversionError(f"{mrc_path.name}: {e}") from None
    nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
    offset = 1024 + int(header.nsymbt)
    _check_size(mrc_path, offset, nx * ny * nz * stored.itemsize, f"{nz} sections of {nx}x{ny} {stored}")

    # A volume (space group 1-230) is Z; a stack of images (0, 401+) is a series in time. Direct
    # Electron movies say "volume" but hold frames: RosettaSciIO knows them by name (rsciio/mrc/_api.py,
    # "*_movie.mrc"), and so do we; a 4D-STEM movie keeps every frame, one per scan point, in T.
    volume = 1 <= int(header.ispg) <= 230 and not mrc_path.name.lower().endswith("_movie.mrc")
    axis = "Z" if volume and nz > 1 else "T"
    if stored.kind == "c":
        dtype, _, _ = complex_parts(lambda y0, y1: None, stored)
        channels = ["amplitude", "phase"]
    else:
        dtype = np.dtype("f4") if stored == np.dtype("f2") else stored.newbyteorder("=")
        channels = [xml.detector or (info.camera if info else None) or "MRC"]

    # the XML knows the calibrated pixel; then the FEI extended header (metres; where RosettaSciIO
    # reads FEI files' scale), then the DE info file, then the standard header (Å); each only when real
    calibration: dict[str, str] = {}
    size = xml.pixel_size or pixel_size(_number(fei.get("FEI.Pixel size X")), _number(fei.get("FEI.Pixel size Y")))
    scan_image = info is not None and info.scan_image(mrc_path.name)
    if size is None and info is not None:
        if info.diffracting and not scan_image:  # the frames are diffraction patterns: reciprocal space
            calibration = dict(info.diffraction)
        else:  # a TEM frame, or a virtual image of a scan (its pixel is the scan's step)
            size = info.specimen
    if size is None and not calibration:
        size = _header_size(voxel, axis)
    metadata = dict(xml.metadata)
    metadata.update({f"MRC.{k}": v for k, v in _header_fields(header).items()})
    metadata.update(fei)
    if info is not None:
        metadata.update(info.metadata)
    metadata.update(calibration)
    # the XML's microscope, else the FEI header's, else the DE camera (see _de.py)
    microscope = xml.microscope or fei.get("FEI.Microscope type") or (info.camera if info else None) or None
    acquired = xml.acquired or (info.acquired if info else None)
    return SourceImage(
        shape={"T": nz if axis == "T" else 1, "C": len(channels), "Z": nz if axis == "Z" else 1, "Y": ny, "X": nx},
        dtype=np.dtype(dtype), planes=lambda: stacked_planes(mrc_path, offset, nz, (ny, nx), stored, dtype),
        channels=channels, pixel_size=size, acquired=acquired, microscope=microscope,
        detector=xml.detector or (info.camera if info else None), metadata=metadata, notes=notes,
        time_increment=info.frame_seconds if info and axis == "T" and nz > 1 and not scan_image else None,
        warnings=unknowns(acquired, microscope, size is not None or bool(calibration)) + (info.warnings if info else []),
    )


def _header_size(voxel, axis: str):
    """The standard header's voxel size (Å), unless it is 0, negative or the uncalibrated 1 Å."""
    x, y, z = (float(v) for v in (voxel.x, voxel.y, voxel.z))
    if x == y == DEFAULT_VOXEL:
        return None
    return pixel_size(x * 1e-10, y * 1e-10, z * 1e-10 if axis == "Z" else None)


def _number(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _precheck(path: Path) -> None:
    """Check the header's sizes against the file before mrcfile allocates anything from them, in the
    byte order mrcfile will read them in: the machine stamp's (little-endian when it is unknown),
    turned round when the mode only makes sense the other way (mrcinterpreter._read_header)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(1024)
    if len(head) < 1024:
        raise ConversionError(f"{path.name} is truncated: an MRC header is 1024 bytes, the file holds {size}")
    try:
        order = byte_order_from_machine_stamp(head[212:216])
    except ValueError:
        order = "<"
    if struct.unpack_from(order + "i", head, 12)[0] not in _MODES | {101}:
        other = ">" if order == "<" else "<"
        order = other if struct.unpack_from(other + "i", head, 12)[0] in _MODES | {101} else order
    nx, ny, nz, mode = struct.unpack_from(order + "4i", head)
    nsymbt = struct.unpack_from(order + "i", head, 92)[0]
    endian = "big" if order == ">" else "little"
    if mode not in _MODES | {101} or not all(0 < n <= MAX_SIDE for n in (nx, ny, nz)):
        raise ConversionError(f"{path.name}: the MRC header (read {endian}-endian, by its machine stamp and mode) "
                              f"declares {nx}x{ny}x{nz} pixels of mode {mode}: not a valid image size or mode")
    if not 0 <= nsymbt <= size - 1024:
        raise ConversionError(f"{path.name}: the header's extended header of {nsymbt} bytes does not fit in the "
                              f"{size}-byte file")


def _check_size(path: Path, offset: int, needed: int, what: str) -> None:
    size = path.stat().st_size
    if offset + needed > size:
        held = max(0, size - offset)
        raise ConversionError(
            f"{path.name} is truncated: header says {what} ({needed} bytes), file holds {held} bytes of pixels"
        )


def _header_fields(header) -> dict[str, str]:
    out = {}
    for name in ("nx", "ny", "nz", "mode", "mx", "my", "mz", "ispg", "nsymbt", "exttyp", "nversion", "nlabl"):
        value = header[name]
        out[name] = clean(value.tobytes().decode("ascii", "replace") if value.dtype.kind == "S" else value)
    out["cella"] = " ".join(str(float(v)) for v in header.cella.tolist())
    for i in range(min(int(header.nlabl), 10)):
        out[f"label{i}"] = clean(header.label[i].decode("ascii", "replace"))
    return out


def _fei_fields(mrc) -> dict[str, str]:
    """The first section's FEI1/FEI2 extended header fields, when the file has them."""
    if bytes(mrc.header.exttyp) not in (b"FEI1", b"FEI2") or mrc.extended_header is None:
        return {}
    try:
        records = mrc.indexed_extended_header
    except (ValueError, TypeError):
        return {}
    if records is None or len(records) == 0:
        return {}
    first = records[0]
    out = {}
    for name in first.dtype.names:
        value = first[name]
        if value.dtype.kind == "S":
            value = value.tobytes().split(b"\x00")[0].decode("ascii", "replace")
        elif value.ndim:
            value = " ".join(str(v) for v in value.tolist())
        out[f"FEI.{name}"] = clean(value)
    return out
