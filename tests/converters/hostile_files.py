"""Hostile inputs of a few kilobytes that declare far more than they hold (issue 23): each builder writes
its file(s) into a folder and returns their paths. test_hostile.py converts each in a child process
under a memory cap and a time-out, so that a regression fails a test instead of taking the machine down.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from tests.helpers import sample


# --- DigitalMicrograph: a struct array of 2**31-1 (DM3) or 2**62 (DM4) entries without fields ---

def _dm(version: int, count: int) -> bytes:
    number = ">I" if version == 3 else ">Q"
    n = struct.Struct(number).pack
    tag = bytes([21]) + struct.pack(">h", 1) + b"a" + (b"" if version == 3 else n(0)) + b"%%%%"
    tag += n(5) + n(20) + n(15) + n(0) + n(0) + n(count)  # array (20) of structs (15) of 0 fields
    tags = b"\x01\x00" + n(1) + tag  # the root group: sorted, closed, one tag
    return n(version)[-4:] + n(len(tags)) + struct.pack(">I", 1) + tags + b"\0" * 8


def dm3_struct_array(tmp: Path) -> list[Path]:
    (tmp / "x.dm3").write_bytes(_dm(3, 2**31 - 1))
    return [tmp / "x.dm3"]


def dm4_struct_array(tmp: Path) -> list[Path]:
    (tmp / "x.dm4").write_bytes(_dm(4, 2**62))
    return [tmp / "x.dm4"]


# --- XML: 20,000 siblings of one name; nesting deeper than Python's stack ---

def _mrc(tmp: Path) -> Path:
    import mrcfile

    with mrcfile.new(tmp / "a.mrc") as mrc:
        mrc.set_data(np.arange(16, dtype=np.int16).reshape(4, 4))
    return tmp / "a.mrc"


def epu_siblings(tmp: Path) -> list[Path]:
    (tmp / "a.xml").write_text("<MicroscopeImage>" + "<a/>" * 20_000 + "</MicroscopeImage>")
    return [_mrc(tmp), tmp / "a.xml"]


def epu_deep(tmp: Path) -> list[Path]:
    (tmp / "a.xml").write_text("<MicroscopeImage>" + "<a>" * 5000 + "</a>" * 5000 + "</MicroscopeImage>")
    return [_mrc(tmp), tmp / "a.xml"]


def _czi(tmp: Path, extra: str) -> Path:
    """A CZI of its file header and metadata segment only: all that the pass-through reads."""
    xml = ("<ImageDocument><Metadata><Information><Image><SizeX>4</SizeX><SizeY>4</SizeY></Image>"
           f"{extra}</Information></Metadata></ImageDocument>").encode()
    header = b"ZISRAWFILE".ljust(16, b"\0") + b"\0" * 16 + bytes(60) + struct.pack("<q", 512)
    segment = b"ZISRAWMETADATA".ljust(16, b"\0") + b"\0" * 16 + struct.pack("<i", len(xml)).ljust(256, b"\0")
    (tmp / "x.czi").write_bytes(header.ljust(512, b"\0") + segment + xml + b"\0" * 288)
    return tmp / "x.czi"


def czi_siblings(tmp: Path) -> list[Path]:
    return [_czi(tmp, "<a/>" * 20_000)]


def czi_directory_count(tmp: Path) -> list[Path]:
    """A subblock directory of one 32-byte entry (no image block, no dimensions) that counts 2**31 - 1."""
    entries = b"DV" + bytes(30)
    directory = (b"ZISRAWDIRECTORY".ljust(16, b"\0") + struct.pack("<qq", 160, 160)
                 + struct.pack("<i", 2**31 - 1).ljust(128, b"\0") + entries)
    path = _czi(tmp, "")
    data = bytearray(path.read_bytes())
    data[84:92] = struct.pack("<q", len(data))  # DirectoryPosition: after the metadata
    path.write_bytes(bytes(data) + directory)
    return [path]


# --- Velox and Berkeley EMD: declared spectra, streams, cubes and 64-bit images with no data ---

def _json_column(group, name: str, record: dict) -> None:
    raw = np.frombuffer(json.dumps(record).encode().ljust(1024, b"\0"), np.uint8)
    group.create_dataset(name, data=raw.reshape(-1, 1))


def _velox(tmp: Path):
    import h5py

    dst = h5py.File(tmp / "x.emd", "w")
    with h5py.File(sample("fei_example_tem_stack.emd")) as src:
        src.copy("Version", dst)
    return dst


def velox_stream_bins(tmp: Path) -> list[Path]:
    """A spectrum stream of 64 values whose settings declare 30 million channels."""
    with _velox(tmp) as f:
        group = f.create_group("Data/SpectrumStream/s")
        _json_column(group, "Metadata", {})
        group.create_dataset("AcquisitionSettings", data=np.array([json.dumps({"bincount": "30000000"}).encode()]))
        group.create_dataset("Data", data=np.arange(64, dtype=np.uint16).reshape(-1, 1))
    return [tmp / "x.emd"]


def velox_stream_sparse(tmp: Path) -> list[Path]:
    """A spectrum stream declaring 2**36 values (128 GiB) of which no chunk was written."""
    with _velox(tmp) as f:
        group = f.create_group("Data/SpectrumStream/s")
        _json_column(group, "Metadata", {})
        group.create_dataset("AcquisitionSettings", data=np.array([json.dumps({"bincount": "4096"}).encode()]))
        group.create_dataset("Data", shape=(2**36, 1), dtype=np.uint16, chunks=(2**20, 1))
    return [tmp / "x.emd"]


def velox_eels_sparse(tmp: Path) -> list[Path]:
    """An EELS spectrum image of 4096 x 2048 channels x 4096 (64 GiB), never written."""
    with _velox(tmp) as f:
        group = f.create_group("Data/EelsSpectrumImage/e")
        _json_column(group, "Metadata", {})
        _json_column(group, "AcquisitionMetadata", {"Data": {"offset": 0, "dispersion": 0.5}})
        group.create_dataset("Data", shape=(4096, 2048, 4096), dtype=np.uint16, chunks=(16, 2048, 16))
    return [tmp / "x.emd"]


def velox_int64_sparse(tmp: Path) -> list[Path]:
    """A 64-bit integer image of 16384 x 16384 x 64 (128 GiB), never written: its range would be scanned."""
    import h5py

    with _velox(tmp) as f, h5py.File(sample("fei_example_tem_stack.emd"), "r") as src:
        key, image = next(iter(src["Data/Image"].items()))
        group = f.create_group(f"Data/Image/{key}")
        image.copy("Metadata", group)
        group.create_dataset("Data", shape=(16384, 16384, 64), dtype=np.int64, chunks=(1024, 1024, 1))
    return [tmp / "x.emd"]


def _berkeley(tmp: Path, name: str, **dataset) -> list[Path]:
    import h5py

    with h5py.File(tmp / "x.emd", "w") as f:
        f.attrs["version_major"], f.attrs["version_minor"] = 0, 2
        group = f.create_group(f"data/{name}")
        group.attrs["emd_group_type"] = 1
        data = group.create_dataset("data", **dataset)
        for i, n in enumerate(reversed(data.shape), 1):
            dim = group.create_dataset(f"dim{i}", data=np.arange(min(n, 4), dtype=np.float64))
            dim.attrs["name"], dim.attrs["units"] = f"axis{i}", "[n_m]"
    return [tmp / "x.emd"]


def berkeley_spectrum_sparse(tmp: Path) -> list[Path]:
    """A 1-D dataset of 10 million values of which one chunk was written."""
    files = _berkeley(tmp, "spectrum", shape=(10_000_000,), dtype=np.float64, chunks=(4096,))
    import h5py

    with h5py.File(files[0], "a") as f:
        f["data/spectrum/data"][:4096] = np.arange(4096)
    return files


def berkeley_int64_sparse(tmp: Path) -> list[Path]:
    """A 64-bit integer stack of 4 x 20000 x 20000 (12.8 GB), never written."""
    return _berkeley(tmp, "image", shape=(4, 20000, 20000), dtype=np.int64, chunks=(1, 1000, 1000))


# --- TIA: unclosed <ObjectInfo> tags; a spectrum series whose offsets all point at one spectrum ---

def emi_unclosed(tmp: Path) -> list[Path]:
    """1.2 MB of unclosed <ObjectInfo>: a regular expression takes 100 s for 20,000 of them, and four
    times as long for each doubling (this is 100,000); one pass takes a second."""
    (tmp / "t.emi").write_bytes(b"JK" + b"<ObjectInfo>" * 100_000)
    (tmp / "t_1.ser").write_bytes(sample("64x64x5_TEM_preview_1.ser").read_bytes())
    return [tmp / "t.emi", tmp / "t_1.ser"]


def _ser_offsets_to_one(data: bytes) -> bytes:
    """Every data offset of a .ser (32-bit offsets in version 0x210, 64-bit in 0x220) set to the first's."""
    data = bytearray(data)
    wide = struct.unpack_from("<H", data, 4)[0] == 0x220
    (valid,) = struct.unpack_from("<I", data, 18)
    (table,) = struct.unpack_from("<Q" if wide else "<I", data, 22)
    entry = 8 if wide else 4
    data[table:table + entry * valid] = data[table:table + entry] * valid
    return bytes(data)


def ser_spectra_one_offset(tmp: Path) -> list[Path]:
    (tmp / "t.emi").write_bytes(sample("16x16-spectrum_image_5x5x4000-not_square.emi").read_bytes())
    ser = sample("16x16-spectrum_image_5x5x4000-not_square_1.ser").read_bytes()
    (tmp / "t_1.ser").write_bytes(_ser_offsets_to_one(ser))
    return [tmp / "t.emi", tmp / "t_1.ser"]


def ser_frames_one_offset(tmp: Path) -> list[Path]:
    (tmp / "t.emi").write_bytes(sample("64x64x5_TEM_preview.emi").read_bytes())
    (tmp / "t_1.ser").write_bytes(_ser_offsets_to_one(sample("64x64x5_TEM_preview_1.ser").read_bytes()))
    return [tmp / "t.emi", tmp / "t_1.ser"]


# --- item 10: an OME-TIFF whose TIFF header disagrees with its OME-XML; an MRC read in the wrong order ---

def ome_tiff_header_lies(tmp: Path) -> list[Path]:
    """OME-XML of 5x4 pixels, TIFF tags of 100000x100000: the TIFF is what Bio-Formats reads."""
    import tifffile

    path = tmp / "x.ome.tif"
    tifffile.imwrite(path, np.zeros((4, 5), np.uint8), ome=True)
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages.first.tags
        for code in (256, 257):
            assert tags[code].dtype == 4, "tifffile writes image sizes as LONG"
            struct.pack_into("<I", data, tags[code].valueoffset, 100000)
    path.write_bytes(bytes(data))
    return [path]


def mrc_stamp_big_endian(tmp: Path) -> list[Path]:
    """A header whose sizes read sensibly little-endian, stamped big-endian (as mrcfile then reads it):
    big-endian, its extended header is 2 GB."""
    header = bytearray(1024)
    struct.pack_into("<4i", header, 0, 4, 4, 1, 0)  # 4x4x1, mode 0
    struct.pack_into("<i", header, 92, 127)  # nsymbt: 127 little-endian, 2130706432 big-endian
    header[208:212], header[212:214] = b"MAP ", b"\x11\x11"
    (tmp / "a.mrc").write_bytes(bytes(header) + bytes(127 + 16))
    (tmp / "a.xml").write_text("<MicroscopeImage></MicroscopeImage>")
    return [tmp / "a.mrc", tmp / "a.xml"]


def berkeley_external(tmp: Path) -> list[Path]:
    """A dataset whose bytes HDF5 reads from another file on the server (external storage)."""
    secret = tmp / "secret.bin"
    secret.write_bytes(b"not the uploader's" * 64)
    return _berkeley(tmp, "image", shape=(8, 8), dtype=np.uint8, external=[(str(secret), 0, 64)])
