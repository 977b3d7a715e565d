"""Velox EMD: every image signal as a channel, frames as time, complex as amplitude and phase."""
from __future__ import annotations

import warnings
from datetime import datetime, timezone

import numpy as np
import pytest
import tifffile

from converters import ConvertOptions, convert
from tests.converters.conftest import sample


def reference(name: str) -> list[dict]:
    from rsciio.emd import file_reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rsciio's own warnings are not under test here
        return file_reader(str(sample(name)))


def test_tem_stack_frames_become_time(tmp_path, check_output):
    result = convert([sample("fei_example_tem_stack.emd")], tmp_path, ConvertOptions())
    [ref] = reference("fei_example_tem_stack.emd")
    assert result.status == "converted"
    assert result.shape == {"T": 2, "C": 1, "Z": 1, "Y": 3, "X": 3}
    assert np.array_equal(tifffile.imread(result.output), ref["data"])
    assert result.microscope == "Titan"
    assert result.acquired == datetime(2019, 12, 5, 10, 3, 44, tzinfo=timezone.utc)
    assert result.pixel_size.unit == "pm" and result.pixel_size.x == pytest.approx(8.172883192297851)
    assert result.channels == ["Ceta"] and result.detector == "BM-Ceta"
    assert result.metadata["Instrument.InstrumentModel"] == "Titan"
    check_output(result)


def test_dpc_every_image_is_a_channel_and_complex_is_split(tmp_path, check_output):
    result = convert([sample("fei_example_dpc_titles.emd")], tmp_path, ConvertOptions())
    refs = reference("fei_example_dpc_titles.emd")
    expected_names = []
    for ref in refs:
        title = ref["metadata"]["General"]["title"]
        expected_names += [f"{title} amplitude", f"{title} phase"] if np.iscomplexobj(ref["data"]) else [title]
    assert result.channels == expected_names
    assert result.shape == {"T": 1, "C": 10, "Z": 1, "Y": 2, "X": 2}
    written = tifffile.imread(result.output)
    assert written.dtype == np.float32  # uint16, float32 and complex64 share the widest exact type
    planes = iter(written)
    for ref in refs:
        data = ref["data"]
        if np.iscomplexobj(data):
            assert np.array_equal(next(planes), np.abs(data).astype(np.float32))
            assert np.array_equal(next(planes), np.angle(data).astype(np.float32))
        else:
            assert np.array_equal(next(planes), data.astype(np.float32))
    assert result.acquired == datetime(2020, 10, 29, 13, 16, 16, tzinfo=timezone.utc)
    assert result.pixel_size.unit == "pm" and result.pixel_size.x == pytest.approx(99.61991555830654)
    assert result.detector == "DF4"
    assert result.notes == []
    check_output(result)


def test_ceta_with_friendly_microscope_name(tmp_path, check_output):
    options = ConvertOptions(microscope_names={"Titan": "Titan Krios G4"})
    result = convert([sample("Camera Ceta Imaging Micro.emd")], tmp_path, options)
    [ref] = reference("Camera Ceta Imaging Micro.emd")
    assert np.array_equal(tifffile.imread(result.output), ref["data"])
    assert result.shape == {"T": 1, "C": 1, "Z": 1, "Y": 512, "X": 512}
    assert result.microscope == "Titan Krios G4"
    assert result.pixel_size.unit == "nm" and result.pixel_size.x == pytest.approx(3.1388370544495516)
    assert result.acquired.tzinfo is not None
    check_output(result)


def test_spectra_are_left_out_and_named(tmp_path):
    import h5py

    path = tmp_path / "with_spectrum.emd"
    with h5py.File(sample("fei_example_tem_stack.emd")) as src, h5py.File(path, "w") as dst:
        for key in ("Version", "Data"):
            src.copy(key, dst)
        dst.create_dataset("Data/SpectrumImage/abc123/Data", data=np.zeros((4, 4, 8), "u2"))
    result = convert([path], tmp_path / "out", ConvertOptions())
    assert result.shape["T"] == 2
    assert result.notes == ["left out spectrum image abc123 (not an image; OME-TIFF holds images only)"]
