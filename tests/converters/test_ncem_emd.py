"""Berkeley (NCEM) EMD: the samples and files written by rsciio's own writer, checked against RosettaSciIO
and against the raw HDF5 attributes."""
from __future__ import annotations

import csv
import warnings
from datetime import UTC, datetime

import h5py
import numpy as np
import pytest
import tifffile

from converters import ConvertOptions, convert
from tests.helpers import sample


def reference(path) -> list[dict]:
    from rsciio.emd import file_reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return file_reader(str(path))


def write_emd(path, data: np.ndarray, axes: list[tuple[str, float, str]], title: str = "HAADF", offset=0.0):
    from rsciio.emd import file_writer

    signal = {
        "data": data,
        "axes": [{"name": n, "scale": s, "offset": offset if i == 0 else 0.0, "units": u, "size": data.shape[i],
                  "navigate": i < data.ndim - 2} for i, (n, s, u) in enumerate(axes)],
        "metadata": {"General": {"title": title}, "Signal": {}}, "original_metadata": {},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        file_writer(str(path), signal)
    return reference(path)[0]


def test_time_series_with_units_spelled_apart(tmp_path, check_output):
    data = np.random.default_rng(0).integers(0, 4000, (3, 20, 30), dtype=np.uint16)
    ref = write_emd(tmp_path / "series.emd", data, [("time", 0.5, "s"), ("y", 0.25, "nm"), ("x", 0.25, "nm")])
    with h5py.File(tmp_path / "series.emd") as f:
        assert f["signals/HAADF/dim1"].attrs["units"] == "[n_m]"  # how Berkeley EMD spells nm
    result = convert([tmp_path / "series.emd"], tmp_path / "out", ConvertOptions())
    assert np.array_equal(tifffile.imread(result.output), ref["data"])
    assert result.shape == {"T": 3, "C": 1, "Z": 1, "Y": 20, "X": 30}
    assert result.channels == ["HAADF"]
    assert (result.pixel_size.x, result.pixel_size.unit) == (pytest.approx(250.0), "pm")
    assert result.acquired is None and result.microscope is None  # Berkeley EMD does not say
    assert result.warnings == ["acquisition date unknown", "microscope unknown"]
    check_output(result)


def test_time_axis_of_unix_seconds_is_the_acquisition_time(tmp_path, check_output):
    start = 1718786459.0
    data = np.zeros((2, 8, 8), np.uint8)
    write_emd(tmp_path / "t.emd", data, [("time", 2.0, "s"), ("y", 1.0, "nm"), ("x", 1.0, "nm")], offset=start)
    with h5py.File(tmp_path / "t.emd") as f:
        assert f["signals/HAADF/dim3"][0] == start
    result = convert([tmp_path / "t.emd"], tmp_path / "out", ConvertOptions())
    assert result.acquired == datetime.fromtimestamp(start, UTC)
    assert "acquisition date unknown" not in result.warnings
    check_output(result)


def test_depth_stack_is_z_and_complex_is_split(tmp_path, check_output):
    rng = np.random.default_rng(1)
    data = (rng.standard_normal((4, 16, 16)) + 1j * rng.standard_normal((4, 16, 16))).astype(np.complex64)
    ref = write_emd(tmp_path / "wave.emd", data, [("z", 2.0, "nm"), ("y", 0.1, "nm"), ("x", 0.1, "nm")], "exit wave")
    result = convert([tmp_path / "wave.emd"], tmp_path / "out", ConvertOptions())
    assert result.shape == {"T": 1, "C": 2, "Z": 4, "Y": 16, "X": 16}
    assert result.channels == ["exit wave amplitude", "exit wave phase"]
    assert result.pixel_size.z == pytest.approx(result.pixel_size.x * 20)
    written = tifffile.imread(result.output).reshape(2, 4, 16, 16)  # XYZCT: Z fastest
    assert np.array_equal(written[0], np.abs(ref["data"]).astype(np.float32))
    assert np.array_equal(written[1], np.angle(ref["data"]).astype(np.float32))
    check_output(result)


def test_a_1d_signal_beside_an_image_is_a_spectrum(tmp_path):
    write_emd(tmp_path / "mixed.emd", np.ones((8, 8), np.float32), [("y", 1.0, "nm"), ("x", 1.0, "nm")])
    with h5py.File(tmp_path / "mixed.emd", "a") as f:
        group = f.create_group("data/EELS")
        group.attrs["emd_group_type"] = 1
        group.create_dataset("data", data=np.arange(2048, dtype=np.float32))
        dim = group.create_dataset("dim1", data=np.array([100.0, 100.5]))
        dim.attrs["name"], dim.attrs["units"] = "Energy loss", "[e_V]"
    result = convert([tmp_path / "mixed.emd"], tmp_path / "out", ConvertOptions())
    assert result.channels == ["HAADF"] and result.notes == []
    [table] = [a.path for a in result.attachments if a.kind == "spectrum-csv"]
    rows = list(csv.reader(table.read_text(encoding="utf-8").splitlines()))
    assert rows[0] == ["energy (eV)", "counts"] and rows[1:3] == [["100.0", "0.0"], ["100.5", "1.0"]]
    assert {(a.source, a.went) for a in result.accounted} == {("data HAADF", "channel"), ("spectrum EELS", "attachment")}


def test_sample_image(tmp_path, check_output):
    result = convert([sample("berkeley_example_image.emd")], tmp_path, ConvertOptions())
    [ref] = reference(sample("berkeley_example_image.emd"))
    assert np.array_equal(tifffile.imread(result.output), ref["data"])
    assert result.shape == {"T": 1, "C": 1, "Z": 1, "Y": 3, "X": 3} and result.channels == ["data"]
    assert ref["axes"][0]["units"] == "[]" and result.pixel_size is None  # dims without units
    assert result.warnings == ["acquisition date unknown", "microscope unknown", "pixel size unknown"]
    assert result.metadata["EMD_version"] == "0.2"
    check_output(result)


def test_sample_stack_without_units_is_a_depth_stack(tmp_path, check_output):
    result = convert([sample("berkeley_example_signal.emd")], tmp_path, ConvertOptions())
    [ref] = reference(sample("berkeley_example_signal.emd"))
    assert result.shape == {"T": 1, "C": 1, "Z": 3, "Y": 3, "X": 3}
    assert np.array_equal(tifffile.imread(result.output), ref["data"])
    check_output(result)


def test_sample_spectrum_only_gets_its_plot_as_image(tmp_path, bioformats):
    result = convert([sample("berkeley_example_spectrum.emd")], tmp_path, ConvertOptions())
    [ref] = reference(sample("berkeley_example_spectrum.emd"))
    assert result.status == "converted" and result.channels == ["red", "green", "blue"]
    assert bioformats(result.output).sizes["C"] == 3
    kinds = {a.kind: a.path for a in result.attachments}
    rows = list(csv.reader(kinds["spectrum-csv"].read_text(encoding="utf-8").splitlines()))
    assert rows[0] == ["channel", "counts"]  # no calibration: channel index, nothing invented
    assert [int(r[0]) for r in rows[1:]] == [0, 1, 2] and [float(r[1]) for r in rows[1:]] == ref["data"].tolist()
    assert kinds["spectrum-plot"].read_bytes().startswith(b"\x89PNG")
    assert ("spectrum data", "image") in {(a.source, a.went) for a in result.accounted}
    assert "pixel size unknown" not in result.warnings  # a plot has no pixel size to know


def test_string_dims_4d_int64(tmp_path, check_output):
    path = sample("emd_type1_stringDims.h5")  # Berkeley EMD is often written as .h5
    result = convert([path], tmp_path / "out", ConvertOptions())
    [ref] = reference(path)
    assert ref["data"].shape == (6, 5, 4, 3)
    assert result.shape == {"T": 6, "C": 1, "Z": 5, "Y": 4, "X": 3}
    assert np.array_equal(tifffile.imread(result.output).reshape(6, 5, 4, 3), ref["data"])
    with h5py.File(path) as f:
        units = f["exper/emd_data/dim1"].attrs["units"]
    assert units == "units1" and result.pixel_size is None  # an unknown unit is not guessed
    assert result.metadata["Calibration X"] == "1 units1" and "pixel size unknown" in result.warnings
    assert result.metadata["Axis dim4"] == "6 steps of 1 units4"
    check_output(result)


@pytest.mark.parametrize("name", ["berkeley_example_image.emd", "berkeley_example_signal.emd",
                                  "berkeley_example_spectrum.emd"])
def test_every_data_array_is_accounted_for(tmp_path, name):
    result = convert([sample(name)], tmp_path, ConvertOptions())
    with h5py.File(sample(name)) as f:
        groups = []
        f.visititems(lambda n, o: groups.append(n) if isinstance(o, h5py.Group) and o.attrs.get("emd_group_type") == 1
                     else None)
    kept = {a.source for a in result.accounted if a.went in ("channel", "image", "attachment")}
    assert len(groups) == 1 and len(kept) == 1  # a spectrum-only file's one source: attached and plotted
