"""Berkeley (NCEM) EMD, written by rsciio's own writer and read back both ways (no public sample ships)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import tifffile

from converters import ConvertOptions, convert


def write_emd(path, data: np.ndarray, axes: list[tuple[str, float, str]], title: str = "HAADF"):
    from rsciio.emd import file_reader, file_writer

    signal = {
        "data": data,
        "axes": [{"name": n, "scale": s, "offset": 0.0, "units": u, "size": data.shape[i],
                  "navigate": i < data.ndim - 2} for i, (n, s, u) in enumerate(axes)],
        "metadata": {"General": {"title": title}, "Signal": {}}, "original_metadata": {},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        file_writer(str(path), signal)
        return file_reader(str(path))[0]


def test_time_series(tmp_path, check_output):
    data = np.random.default_rng(0).integers(0, 4000, (3, 20, 30), dtype=np.uint16)
    ref = write_emd(tmp_path / "series.emd", data, [("time", 0.5, "s"), ("y", 0.25, "nm"), ("x", 0.25, "nm")])
    result = convert([tmp_path / "series.emd"], tmp_path / "out", ConvertOptions())
    assert np.array_equal(tifffile.imread(result.output), ref["data"])
    assert result.shape == {"T": 3, "C": 1, "Z": 1, "Y": 20, "X": 30}
    assert result.channels == ["HAADF"]
    assert (result.pixel_size.x, result.pixel_size.unit) == (pytest.approx(250.0), "pm")
    assert result.acquired is None and result.microscope is None  # Berkeley EMD does not say
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


def test_spectrum_is_left_out(tmp_path):
    import h5py

    write_emd(tmp_path / "mixed.emd", np.ones((8, 8), np.float32), [("y", 1.0, "nm"), ("x", 1.0, "nm")])
    with h5py.File(tmp_path / "mixed.emd", "a") as f:
        group = f.create_group("data/EELS")
        group.attrs["emd_group_type"] = 1
        group.create_dataset("data", data=np.zeros(2048, np.float32))
    result = convert([tmp_path / "mixed.emd"], tmp_path / "out", ConvertOptions())
    assert result.channels == ["HAADF"]
    assert result.notes == ["left out EELS: a 1-D float32 signal is not an image or image stack"]
