"""HDF5 written by a program we do not recognise: imported with warnings, never called damaged.

Files are written here with h5py; pixels, attributes and shapes are checked against h5py's own
reads of the same file."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile

from converters import ConversionError, ConvertOptions, convert, registry
from converters.formats import hdf5
from converters.meta import DATE_UNKNOWN, MICROSCOPE_UNKNOWN, PIXEL_SIZE_UNKNOWN
from tests.helpers import sample


def run(path, tmp_path):
    return convert([path], tmp_path / "out", ConvertOptions())


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def image_file(path):
    """A 2-D uint16 image with attributes in the forms writers use, a 3-D stack and a few non-images."""
    rng = np.random.default_rng(5)
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "ptychography run"
        f.attrs["operator"] = np.bytes_(b"ada")
        f.attrs["voltage"] = np.float32(300.0)
        f.attrs["frames"] = np.array([7], dtype=np.int64)
        f.attrs["label"] = np.array(["probe"], dtype=h5py.string_dtype())
        image = f.create_dataset("entry/image", data=rng.integers(0, 60000, (90, 120), dtype=np.uint16),
                                 chunks=(16, 32), compression="gzip")
        image.attrs["gain"] = np.array([2.5])
        f["entry/stack"] = rng.random((4, 20, 30), dtype=np.float32)
        f["entry/positions"] = np.arange(500.0)
        f["entry/notes"] = np.array([b"line"] * 100)
        f["entry/phase"] = np.zeros((8, 8), complex)
        f["entry/exposure"] = 0.25


def test_a_plain_h5py_file_imports_with_warnings(tmp_path):
    path = tmp_path / "run.h5"
    image_file(path)
    result = run(path, tmp_path)
    images = [tifffile.imread(i.path) for i in result.images]
    with h5py.File(path) as f:
        assert np.array_equal(images[0], f["entry/image"][()])
        assert np.array_equal(images[1], f["entry/stack"][()])
        attrs = {k: f.attrs[k] for k in f.attrs}
    assert [i.title for i in result.images] == [None, "entry/stack"]
    assert result.images[1].shape == {"T": 4, "C": 1, "Z": 1, "Y": 20, "X": 30}
    assert result.metadata["title"] == attrs["title"] and result.metadata["operator"] == text(attrs["operator"])
    assert float(result.metadata["voltage"]) == float(attrs["voltage"])
    assert result.metadata["frames"] == str(attrs["frames"][0]) and result.metadata["label"] == "probe"
    assert result.metadata["entry/image@gain"] == "2.5" and result.metadata["entry/exposure"] == "0.25"
    assert result.warnings[0] == hdf5.UNKNOWN_WRITER
    assert {DATE_UNKNOWN, MICROSCOPE_UNKNOWN, PIXEL_SIZE_UNKNOWN} <= set(result.warnings)
    assert result.pixel_size is None and result.acquired is None and result.microscope is None
    went = {a.source: (a.went, a.where) for a in result.accounted}
    assert went["data entry/image"] == ("image", "run") and went["data entry/stack"] == ("image", "run [entry/stack]")
    assert went["data entry/exposure"][0] == "metadata"
    assert {went[f"data entry/{n}"][0] for n in ("positions", "notes", "phase")} == {"not kept"}
    assert "complex" in went["data entry/phase"][1] and "spectrum" in went["data entry/positions"][1]


def test_a_depth_label_makes_z_and_outer_axes_are_flattened_into_t(tmp_path):
    path = tmp_path / "vol.hdf5"
    with h5py.File(path, "w") as f:
        f["volume"] = np.arange(3 * 10 * 12, dtype=np.int16).reshape(3, 10, 12)
        f["volume"].dims[0].label = "z"
        f["series"] = np.arange(2 * 3 * 5 * 6, dtype=np.uint8).reshape(2, 3, 5, 6)
    result = run(path, tmp_path)
    with h5py.File(path) as f:
        volume, series = f["volume"][()], f["series"][()]
    assert result.shape == {"T": 1, "C": 1, "Z": 3, "Y": 10, "X": 12}
    assert np.array_equal(tifffile.imread(result.images[0].path), volume)
    assert result.images[1].shape == {"T": 6, "C": 1, "Z": 1, "Y": 5, "X": 6}
    assert np.array_equal(tifffile.imread(result.images[1].path), series.reshape(6, 5, 6))
    assert any("flattened into 6 time points" in note for note in result.notes)


def test_rgb_is_channels_and_64_bit_integers_are_narrowed(tmp_path):
    path = tmp_path / "colour.h5"
    with h5py.File(path, "w") as f:
        f["photo"] = np.random.default_rng(1).integers(0, 255, (40, 50, 3), dtype=np.uint8)
        f["counts"] = np.arange(20 * 30, dtype=np.int64).reshape(20, 30)
    result = run(path, tmp_path)
    with h5py.File(path) as f:
        photo, counts = f["photo"][()], f["counts"][()]
    assert result.shape == {"T": 1, "C": 3, "Z": 1, "Y": 40, "X": 50} and result.channels == ["red", "green", "blue"]
    assert np.array_equal(tifffile.imread(result.images[0].path), photo.transpose(2, 0, 1))
    narrowed = tifffile.imread(result.images[1].path)
    assert narrowed.dtype == np.uint16 and np.array_equal(narrowed, counts)


def test_a_collection_of_arrays_imports_the_largest(tmp_path, monkeypatch):
    monkeypatch.setattr(hdf5, "MAX_IMAGES", 2)
    path = tmp_path / "patches.h5"
    with h5py.File(path, "w") as f:
        for i in range(4):
            f[f"patch{i}"] = np.full((10 + i, 12), i, np.uint8)
    result = run(path, tmp_path)
    assert [i.shape["Y"] for i in result.images] == [13, 12]
    went = {a.source: a.went for a in result.accounted}
    assert went["data patch1"] == went["data patch0"] == "not kept" and went["data patch3"] == "image"


def test_a_file_with_no_image_says_so(tmp_path):
    path = tmp_path / "table.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(1000.0)
        f["names"] = np.array([b"a"] * 100)
    with pytest.raises(ConversionError, match=r"^table\.h5 is an HDF5 file that holds no image: .*x: a list of "
                                              r"1,000 numbers") as error:
        run(path, tmp_path)
    assert "damaged" not in str(error.value)


def test_a_named_spectrum_is_kept_as_one(tmp_path):
    path = tmp_path / "eds.h5"
    with h5py.File(path, "w") as f:
        f["eds_spectrum"] = np.arange(2048, dtype=np.uint32)
        f["eds_spectrum"].attrs.update({"offset": -0.1, "scale": 0.01, "units": "keV"})
    result = run(path, tmp_path)
    assert [a.kind for a in result.attachments] == ["spectrum-csv", "spectrum-plot"]
    assert "keV" in result.attachments[0].path.read_text().splitlines()[0]


def test_external_storage_is_refused_before_reading(tmp_path):
    (tmp_path / "outside.raw").write_bytes(np.ones(64 * 64, np.uint16).tobytes())
    path = tmp_path / "ext.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("img", shape=(64, 64), dtype=np.uint16, external=[(str(tmp_path / "outside.raw"), 0, 8192)])
    with pytest.raises(ConversionError, match=r"^ext\.h5: /img keeps its data outside the file"):
        run(path, tmp_path)


def test_a_sparse_dataset_is_refused_as_a_bomb(tmp_path):
    path = tmp_path / "sparse.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("img", shape=(100, 4096, 4096), dtype=np.uint16, chunks=(1, 512, 512))
    with pytest.raises(ConversionError, match=r"^sparse\.h5 declares .* refused as a decompression bomb"):
        run(path, tmp_path)


def test_a_truncated_hdf5_is_named_truncated(tmp_path):
    full = tmp_path / "full.h5"
    image_file(full)
    (tmp_path / "cut.h5").write_bytes(full.read_bytes()[:3000])
    with pytest.raises(ConversionError, match=rf"^cut\.h5 is truncated: its HDF5 header says {full.stat().st_size} bytes, "
                                              r"the file holds 3000 \(an interrupted copy\?\)$"):
        run(tmp_path / "cut.h5", tmp_path)


@pytest.mark.parametrize("name, plugin", [("fei_example_tem_stack.emd", "velox_emd"),
                                          ("berkeley_example_image.emd", "ncem_emd"),
                                          ("emd_type1_stringDims.h5", "ncem_emd")])
def test_emd_files_still_go_to_their_own_plugins(name, plugin):
    assert registry.identify(sample(name)).__name__.endswith(plugin)


def test_a_damaged_group_says_so(tmp_path):
    path = tmp_path / "heap.h5"
    with h5py.File(path, "w") as f:
        for i in range(3):
            f[f"g{i}/img"] = np.ones((40, 50), np.uint16)
    data = bytearray(path.read_bytes())
    heap = data.rfind(b"HEAP")  # the signature of a group's local heap (its member names)
    data[heap:heap + 4] = b"XXXX"
    path.write_bytes(bytes(data))
    with pytest.raises(ConversionError, match=r"^heap\.h5: its HDF5 structure cannot be read \(RuntimeError: .*\); "
                                              r"it may be damaged or incomplete$"):
        run(path, tmp_path)
