"""Real samples cut short or with bytes overwritten, as an interrupted copy or a failing disk leaves
them: each fails with a message that names the damage (found by a survey that truncated, flipped and
zeroed every sample), never with the registry's "could not be read: <exception>" or an exception."""
from __future__ import annotations

import re

import h5py
import numpy as np
import pytest

from converters import ConversionError, ConvertOptions, convert
from tests.helpers import SAMPLES, sample


def damaged(tmp_path, name: str, keep: int | None = None, at: int = 0, put: bytes = b"") -> list:
    """The sample in tmp_path, `put` written at byte `at`, its first `keep` bytes only."""
    data = bytearray(sample(name).read_bytes())
    data[at:at + len(put)] = put
    path = tmp_path / name
    path.write_bytes(bytes(data[:keep]))
    return [path]


def refusal(files, tmp_path) -> str:
    with pytest.raises(ConversionError) as caught:
        convert(files, tmp_path / "out", ConvertOptions(workers=1))
    return str(caught.value)


def _starts_with(path, magic: bytes) -> bool:
    with open(path, "rb") as f:
        return f.read(len(magic)) == magic


HDF5_SAMPLES = sorted(p.name for p in SAMPLES.iterdir() if _starts_with(p, b"\x89HDF\r\n\x1a\n"))


@pytest.mark.parametrize("name", HDF5_SAMPLES)
@pytest.mark.parametrize("share", [0.01, 0.5, 0.9])
def test_cut_hdf5_file_is_named_truncated_with_its_size(tmp_path, name, share):
    """Was "is not a valid Velox EMD or Berkeley EMD or HDF5 file: its content is an HDF5 file"."""
    size = sample(name).stat().st_size
    keep = int(size * share)
    message = refusal(damaged(tmp_path, name, keep), tmp_path)
    assert message == f"{name} is truncated: its HDF5 header says {size} bytes, the file holds {keep} (an interrupted copy?)"


def test_hdf5_cut_by_one_byte_or_inside_its_header(tmp_path):
    name = "fei_example_tem_stack.emd"
    size = sample(name).stat().st_size
    assert refusal(damaged(tmp_path, name, size - 1), tmp_path).endswith(f"the file holds {size - 1} (an interrupted copy?)")
    assert refusal(damaged(tmp_path, name, 20), tmp_path) == f"{name} is truncated inside its HDF5 header (the file holds 20 bytes)"


@pytest.mark.parametrize("libver", ["earliest", "latest"])  # superblock version 0 and version 3
def test_cut_hdf5_of_either_superblock_version_is_named_truncated(tmp_path, libver):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w", libver=libver) as f:
        f["image"] = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:size - 100])
    assert re.fullmatch(rf"x\.h5 is truncated: its HDF5 header says {size} bytes, the file holds {size - 100} .*",
                        refusal([path], tmp_path))


def _velox_data_shape(path) -> tuple[int, ...]:
    with h5py.File(path) as f:
        return next(iter(f["Data/Image"].values()))["Data"].shape


@pytest.mark.parametrize("byte", [3929, 3937])  # the high byte of the Ceta image's height (512), of its width
def test_velox_image_whose_size_reads_zero_is_named_empty(tmp_path, byte):
    """Was the registry's "could not be read: ValidationError" (an OME image of no rows), and for a zero
    width a ZeroDivisionError in RosettaSciIO that escaped convert()."""
    files = damaged(tmp_path, "Camera Ceta Diffraction Micro.emd", at=byte, put=b"\0")
    ny, nx, frames = _velox_data_shape(files[0])
    assert 0 in (ny, nx)
    assert refusal(files, tmp_path) == (f"Camera Ceta Diffraction Micro.emd: an image declares {nx}x{ny} pixels in "
                                        f"{frames} frames, an empty array; the file is damaged")


@pytest.mark.parametrize("name, byte, error", [
    ("Camera Ceta Imaging Micro.emd", 2563, "RuntimeError: Unable to get group info"),  # a symbol table entry
    ("STEM HAADF Diffraction Micro.emd", 1676, "RuntimeError: Link iteration failed"),  # a local heap
    ("berkeley_example_image.emd", 2251, "OSError: Can't synchronously read data"),  # an attribute
])
def test_damaged_hdf5_structure_is_named_as_such(tmp_path, name, byte, error):
    """Each was "<name> could not be read: <error>" from the registry's net (Velox and Berkeley EMD)."""
    original = sample(name).read_bytes()[byte]
    message = refusal(damaged(tmp_path, name, at=byte, put=bytes([original ^ 0xFF])), tmp_path)
    assert message.startswith(f"{name}: its HDF5 structure cannot be read ({error}")
    assert message.endswith("; it may be damaged or incomplete")


CZI_SAMPLES = ["Al2O3_SE_020_sp.czi", "DAPI_GFP.czi", "S3_1Pos_2Mosaic_T1_Z1_CH1.czi"]


@pytest.mark.parametrize("name", CZI_SAMPLES)
@pytest.mark.parametrize("share", [0.01, 0.5, 0.9])
def test_cut_czi_is_named_truncated_not_passed_through(tmp_path, name, share):
    """A CZI is passed to OMERO as it is: cut anywhere after its metadata, it "converted" (OMERO would then
    fail on it, or import it with tiles missing)."""
    size = sample(name).stat().st_size
    keep = int(size * share)
    message = refusal(damaged(tmp_path, name, keep), tmp_path)
    found = re.fullmatch(rf"{re.escape(name)} is truncated: its directories place data up to byte (\d+), the file "
                         rf"holds {keep} bytes \(an interrupted copy\?\)", message)
    assert found and keep < int(found[1]) <= size, message


@pytest.mark.parametrize("name", CZI_SAMPLES)
def test_whole_czi_and_one_cut_from_its_padding_pass_through(tmp_path, name):
    """The attachment directory's allocated but unused tail is padding: a CZI without its last byte
    still holds every segment whole."""
    for keep in (None, -1):
        assert convert(damaged(tmp_path, name, keep), tmp_path / "out", ConvertOptions()).status == "passthrough"


def test_czi_directory_pointing_at_no_image_block_is_damaged(tmp_path):
    data = sample("DAPI_GFP.czi").read_bytes()
    at = data.rindex(b"ZISRAWSUBBLOCK")  # the image block furthest into the file
    message = refusal(damaged(tmp_path, "DAPI_GFP.czi", at=at, put=bytes(16)), tmp_path)
    assert message == f"DAPI_GFP.czi: no CZI ZISRAWSUBBLOCK segment at byte {at}, where the file places one; the file is damaged"
