"""Broken inputs the converters must refuse, each with the error it must give (its builder writes the
file(s) into a folder and returns their paths): the converters' tests and the API's malformed-input tests
share them."""
from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np

from tests.helpers import sample


def copy(tmp: Path, name: str, as_name: str | None = None) -> Path:
    target = tmp / (as_name or name)
    shutil.copy(sample(name), target)
    return target


def empty(tmp):
    (tmp / "x.emd").write_bytes(b"")
    return [tmp / "x.emd"]


def random_bytes_emd(tmp):
    (tmp / "x.emd").write_bytes(np.random.default_rng(1).bytes(4096))
    return [tmp / "x.emd"]


def truncated_emd(tmp):
    data = sample("Camera Ceta Imaging Micro.emd").read_bytes()
    (tmp / "x.emd").write_bytes(data[: len(data) // 3])
    return [tmp / "x.emd"]


def emd_named_tif(tmp):
    return [copy(tmp, "fei_example_tem_stack.emd", "stack.tif")]


def sem_named_emd(tmp):
    return [copy(tmp, "sample6_001.tif", "sem.emd")]


def tiff_named_mrc(tmp):
    copy(tmp, "Atlas_1.xml", "a.xml")
    return [copy(tmp, "FEI-Helios-Ebeam-8bits.tif", "a.mrc"), tmp / "a.xml"]


def pdf_named_tif(tmp):
    (tmp / "x.tif").write_bytes(b"%PDF-1.7\n" + b"\0" * 100)
    return [tmp / "x.tif"]


def truncated_tiff(tmp):
    data = sample("sample6_001.tif").read_bytes()
    (tmp / "x.tif").write_bytes(data[:4096])
    return [tmp / "x.tif"]


def mrc_dimensions_lie(tmp):
    path = copy(tmp, "temp.mrc", "a.mrc")
    copy(tmp, "Atlas_1.xml", "a.xml")
    data = bytearray(path.read_bytes())
    data[0:12] = struct.pack("<3i", 100000, 100000, 1000)
    path.write_bytes(bytes(data))
    return [path, tmp / "a.xml"]


def mrc_extended_header_lies(tmp):
    path = copy(tmp, "temp.mrc", "a.mrc")
    copy(tmp, "Atlas_1.xml", "a.xml")
    data = bytearray(path.read_bytes())
    data[92:96] = struct.pack("<i", 2**31 - 1)
    path.write_bytes(bytes(data))
    return [path, tmp / "a.xml"]


def mrc_header_only(tmp):
    (tmp / "a.mrc").write_bytes(sample("temp.mrc").read_bytes()[:500])
    copy(tmp, "Atlas_1.xml", "a.xml")
    return [tmp / "a.mrc", tmp / "a.xml"]


def epu_xml_broken(tmp):
    copy(tmp, "temp.mrc", "a.mrc")
    (tmp / "a.xml").write_text(sample("Atlas_1.xml").read_text(encoding="utf-8")[:3000], encoding="utf-8")
    return [tmp / "a.mrc", tmp / "a.xml"]


def _tia(tmp, ser: bytes):
    copy(tmp, "64x64x5_TEM_preview.emi", "t.emi")
    (tmp / "t_1.ser").write_bytes(ser)
    return [tmp / "t.emi", tmp / "t_1.ser"]


def ser_element_count_lies(tmp):
    data = bytearray(sample("64x64x5_TEM_preview_1.ser").read_bytes())
    data[14:22] = struct.pack("<II", 2**31, 2**31)
    return _tia(tmp, bytes(data))


def ser_frame_size_lies(tmp):
    data = bytearray(sample("64x64x5_TEM_preview_1.ser").read_bytes())
    (table,) = struct.unpack_from("<I", data, 22)
    (first,) = struct.unpack_from("<I", data, table)
    data[first + 42:first + 50] = struct.pack("<II", 60000, 60000)
    return _tia(tmp, bytes(data))


def ser_truncated(tmp):
    data = sample("64x64x5_TEM_preview_1.ser").read_bytes()
    return _tia(tmp, data[:30])


def ser_wrong_magic(tmp):
    return _tia(tmp, b"NOPE" + sample("64x64x5_TEM_preview_1.ser").read_bytes()[4:])


def ser_alone(tmp):
    return [copy(tmp, "64x64x5_TEM_preview_1.ser", "t_1.ser")]


def emi_damaged_xml(tmp):
    files = _tia(tmp, sample("64x64x5_TEM_preview_1.ser").read_bytes())
    data = files[0].read_bytes().replace(b"</AcquireDate>", b"</Acquire>", 1)
    files[0].write_bytes(data)
    return files


def ser_of_another_emi(tmp):
    copy(tmp, "64x64x5_TEM_preview.emi", "t.emi")
    return [tmp / "t.emi", copy(tmp, "64x64x5_TEM_preview_1.ser", "other_1.ser")]


def velox_without_images(tmp):
    import h5py

    with h5py.File(sample("fei_example_tem_stack.emd")) as src, h5py.File(tmp / "x.emd", "w") as dst:
        src.copy("Version", dst)
        dst.create_dataset("Data/Spectrum/s1/Data", data=np.zeros(16, "u4"))
    return [tmp / "x.emd"]


def missing_file(tmp):
    return [tmp / "nowhere.emd"]


def ome_tiff_broken_xml(tmp):
    import tifffile

    xml = '<?xml version="1.0"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0" Name="<oops>"/></OME>'
    tifffile.imwrite(tmp / "x.ome.tif", np.zeros((4, 5), np.uint8), description=xml.encode(), metadata=None)
    return [tmp / "x.ome.tif"]


def zeiss_tag_not_text(tmp):
    """SmartSEM parameters that are no text (found by atheris): tifffile hands back raw bytes."""
    data = bytearray(sample("test_tiff_Zeiss_SEM_1k.tif").read_bytes())
    data[1746:1746 + 64] = b"\x81" * 64  # where the tag's text starts
    (tmp / "z.tif").write_bytes(bytes(data))
    return [tmp / "z.tif"]


def sem_zero_width(tmp):
    """ImageWidth 0 (found by atheris): once a division by zero."""
    data = bytearray(sample("test_tiff_Zeiss_SEM_1k.tif").read_bytes())
    data[30:32] = struct.pack("<H", 0)  # the value of the IFD's ImageWidth entry
    (tmp / "z.tif").write_bytes(bytes(data))
    return [tmp / "z.tif"]


def ome_tiff_zstd_bomb(tmp):
    """1 GiB of zero pixels in a few kilobytes: zstd packs each 1 MiB tile of zeros into ~40 bytes."""
    import tifffile

    tiles = (np.zeros((1024, 1024), np.uint8) for _ in range(32 * 32))
    tifffile.imwrite(tmp / "bomb.ome.tif", tiles, shape=(32768, 32768), dtype=np.uint8, tile=(1024, 1024),
                     compression="zstd", ome=True)
    return [tmp / "bomb.ome.tif"]


def velox_sparse_bomb(tmp):
    """A Velox image of 10 GiB whose chunks were never written: HDF5 stores nothing and reads zeros."""
    import h5py

    with h5py.File(sample("fei_example_tem_stack.emd")) as src, h5py.File(tmp / "x.emd", "w") as dst:
        for name in src:
            if name != "Data":
                src.copy(name, dst)
        key, image = next(iter(src["Data/Image"].items()))
        group = dst.create_group(f"Data/Image/{key}")
        image.copy("Metadata", group)
        group.create_dataset("Data", shape=(16384, 16384, 20), dtype=image["Data"].dtype, chunks=(1024, 1024, 1))
    return [tmp / "x.emd"]


def dm_truncated(tmp):
    data = sample("dmTest_float32_nonSquare_diffPixelSize.dm4").read_bytes()
    (tmp / "x.dm4").write_bytes(data[:41512])  # cut inside the pixels: the tags after them are gone
    return [tmp / "x.dm4"]


def dm_tags_damaged(tmp):
    data = bytearray(sample("dmTest_float32_nonSquare_diffPixelSize.dm3").read_bytes())
    data[16:24] = b"%" * 8  # the first tag's header
    (tmp / "x.dm3").write_bytes(bytes(data))
    return [tmp / "x.dm3"]


def dm_named_tif(tmp):
    return [copy(tmp, "dmTest_float32_nonSquare_diffPixelSize.dm3", "x.tif")]


CORPUS = [
    (empty, r"^x\.emd is empty \(0 bytes\)$"),
    (random_bytes_emd, r"^x\.emd is not a valid Velox EMD or Berkeley EMD or HDF5 file: its content starts with the bytes"),
    (truncated_emd, r"^x\.emd is truncated: its HDF5 header says 756835 bytes, the file holds 252278 \(an interrupted copy\?\)$"),
    (emd_named_tif, r"^stack\.tif is named \.tif but its content is a Velox EMD file; rename it to \.emd"),
    (sem_named_emd, r"^sem\.emd is named \.emd but its content is a Zeiss SEM TIFF file"),
    (tiff_named_mrc, r"^a\.mrc is named \.mrc but its content is a Thermo Fisher/FEI SEM TIFF file"),
    (pdf_named_tif, r"^x\.tif is not a valid OME-TIFF or Thermo Fisher/FEI SEM TIFF or Zeiss SEM TIFF or TIFF file: its content is a PDF"),
    (truncated_tiff, r"^x\.tif"),
    (mrc_dimensions_lie, r"^a\.mrc is truncated: header says 1000 sections of 100000x100000 float32 \(40000000000000 bytes\)"),
    (mrc_extended_header_lies, r"^a\.mrc: the header's extended header of 2147483647 bytes does not fit"),
    (mrc_header_only, r"^a\.mrc is truncated: an MRC header is 1024 bytes, the file holds 500"),
    (epu_xml_broken, r"^a\.xml is not valid XML"),
    (ser_element_count_lies, r"^t_1\.ser: the header is damaged \(2147483648 valid of 2147483648 elements"),
    (ser_frame_size_lies, r"^t_1\.ser is truncated: header says 5 frames of 60000x60000, file holds 0"),
    (ser_truncated, r"^t_1\.ser: the header is damaged \(5 valid of 5 elements, 1 dimensions in a 30-byte file\)"),
    (ser_wrong_magic, r"^t_1\.ser is not a TIA \.ser file"),
    (ser_alone, r"^t_1\.ser needs its t\.emi in the same upload"),
    (emi_damaged_xml, r"^t\.emi: its metadata XML is damaged"),
    (ser_of_another_emi, r"^other_1\.ser does not belong to t\.emi"),
    (velox_without_images, r"^x\.emd: spectrum 1 has no Metadata; the file is damaged or was not written by Velox$"),
    (missing_file, r"^nowhere\.emd is missing$"),
    (dm_truncated, r"^x\.dm4 is truncated: its header says 78026 bytes, the file holds 41512"),
    (dm_tags_damaged, r"^x\.dm3 is not a readable DigitalMicrograph file: its tags are damaged \(DM3TagIDError"),
    (dm_named_tif, r"^x\.tif is named \.tif but its content is a Gatan DigitalMicrograph file; rename it to \.dm3"),
    (ome_tiff_broken_xml, r"^x\.ome\.tif: the OME-XML of this OME-TIFF cannot be read \(not well-formed"),
    (zeiss_tag_not_text, r"^z\.tif: the SmartSEM metadata \(tag 34118\) is damaged \(not parameter text\)$"),
    (sem_zero_width, r"^z\.tif: its image is 0x768 pixels: there is nothing to import$"),
    (ome_tiff_zstd_bomb, r"^bomb\.ome\.tif declares 1\.1 GB of pixels in \d+\.\d KB of file: refused as a decompression bomb"),
    (velox_sparse_bomb, r"^x\.emd declares 10\.7 GB of pixels in 0 bytes of stored data: refused as a decompression bomb "
                        r"\(none of it is stored\)$"),
]
