"""HDF5 metadata in every form writers use: text as str, bytes, numpy bytes or a one-element array (of bytes
or of variable-length strings), numbers as numpy scalars or one-element arrays, times as attributes or as
datasets of Unix seconds. Files are written here with h5py; expected values are the ones written."""
from __future__ import annotations

import shutil
from datetime import UTC, datetime

import h5py
import numpy as np
import pytest
import tifffile

from converters import ConvertOptions, convert
from converters.formats._hdf5 import attr_text
from tests.helpers import sample

START = 1718786459.0
TEXT_FORMS = {
    "str": lambda s: s,
    "bytes": lambda s: s.encode(),
    "numpy bytes": lambda s: np.bytes_(s.encode()),
    "1-element bytes array": lambda s: np.array([s.encode()]),
    "1-element string array": lambda s: np.array([s], dtype=h5py.string_dtype()),
}
NUMBER_FORMS = {
    "int": lambda n: n,
    "numpy scalar": lambda n: np.int32(n),
    "1-element array": lambda n: np.array([n], dtype=np.int64),
}


def berkeley(path, text, number, time_as: str = "none"):
    """A Berkeley EMD image 6x4 of 0.5 nm pixels whose attributes are all written in the given forms."""
    data = np.arange(24, dtype=np.uint16).reshape(6, 4)
    with h5py.File(path, "w") as f:
        f.attrs["version_major"], f.attrs["version_minor"] = number(0), number(2)
        scope = f.create_group("microscope")
        scope.attrs["name"] = text("Titan X")
        if time_as == "attribute":
            scope.attrs["start_time"] = np.array([START])
        elif time_as == "dataset":
            scope.create_dataset("start_time", data=np.array([START]))
        group = f.create_group("signals/HAADF")
        group.attrs["emd_group_type"] = number(1)
        group.create_dataset("data", data=data.T)  # Berkeley stores the fastest axis first: (X, Y)
        for i, (n, size) in enumerate((("x", 4), ("y", 6)), 1):
            dim = group.create_dataset(f"dim{i}", data=np.arange(size) * 0.5)
            dim.attrs["name"], dim.attrs["units"] = text(n), text("[n_m]")
    return data


@pytest.mark.parametrize("form", TEXT_FORMS)
def test_attr_text_reads_every_form(form):
    assert attr_text(TEXT_FORMS[form]("nm")) == "nm"


@pytest.mark.parametrize("text_form", TEXT_FORMS)
@pytest.mark.parametrize("number_form", NUMBER_FORMS)
def test_berkeley_attributes_in_any_form(tmp_path, text_form, number_form):
    path = tmp_path / "scan.emd"
    data = berkeley(path, TEXT_FORMS[text_form], NUMBER_FORMS[number_form])
    with h5py.File(path) as f:  # the form really is the one under test
        assert type(f["microscope"].attrs["name"]).__name__ in ("str", "bytes_", "ndarray")
    result = convert([path], tmp_path / "out", ConvertOptions())
    assert np.array_equal(tifffile.imread(result.output), data)
    assert (result.pixel_size.x, result.pixel_size.unit) == (pytest.approx(500.0), "pm")
    assert result.microscope == "Titan X"
    assert result.metadata["microscope.name"] == "Titan X"


@pytest.mark.parametrize("time_as", ["attribute", "dataset"])
def test_berkeley_acquisition_time_as_attribute_or_dataset_of_unix_seconds(tmp_path, time_as):
    path = tmp_path / "timed.emd"
    berkeley(path, TEXT_FORMS["1-element bytes array"], NUMBER_FORMS["numpy scalar"], time_as)
    result = convert([path], tmp_path / "out", ConvertOptions())
    assert result.acquired == datetime.fromtimestamp(START, UTC)
    assert "acquisition date unknown" not in result.warnings


@pytest.mark.parametrize("form", ["bytes", "str", "1-element string array", "1-element bytes array"])
def test_velox_version_in_any_form(tmp_path, form):
    """Velox writes a one-element array; its text may be bytes or a variable-length string (RosettaSciIO's
    Velox reader, like Velox, needs the array: a scalar Version is not a Velox file)."""
    path = tmp_path / "stack.emd"
    shutil.copy(sample("fei_example_tem_stack.emd"), path)
    with h5py.File(path, "a") as f:
        text = bytes(f["Version"][0]).decode()
        del f["Version"]
        value = TEXT_FORMS[form](text)
        f.create_dataset("Version", data=np.array([value], dtype=h5py.string_dtype() if form == "str" else None)
                         if np.ndim(value) == 0 else value)
    result = convert([path], tmp_path / "out", ConvertOptions())
    assert result.status == "converted" and result.shape["T"] == 2
