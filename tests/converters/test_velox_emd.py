"""Velox EMD: every signal has a place (channels, further images, spectra as attachments), checked
against RosettaSciIO and against the file's own HDF5 layout, read independently."""
from __future__ import annotations

import csv
import json
import warnings
from datetime import UTC, datetime

import h5py
import numpy as np
import pytest
import tifffile

from converters import ConvertOptions, convert
from tests.helpers import sample

VELOX_SAMPLES = ["fei_example_tem_stack.emd", "fei_example_dpc_titles.emd", "Camera Ceta Imaging Micro.emd",
                 "Camera Ceta Diffraction Micro.emd", "STEM HAADF Diffraction Micro.emd",
                 "example_velox_EELS_EDS.emd", "SI_empty_selection.emd"]


def reference(name: str, **options) -> list[dict]:
    from rsciio.emd import file_reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rsciio's own warnings are not under test here
        return file_reader(str(sample(name)), **options)


def read_csv(path) -> tuple[str, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0][0], np.array([[float(v) for v in row] for row in rows[1:]])


def test_tem_stack_frames_become_time(tmp_path, check_output):
    result = convert([sample("fei_example_tem_stack.emd")], tmp_path, ConvertOptions())
    [ref] = reference("fei_example_tem_stack.emd")
    assert result.status == "converted"
    assert result.shape == {"T": 2, "C": 1, "Z": 1, "Y": 3, "X": 3}
    assert np.array_equal(tifffile.imread(result.output), ref["data"])
    assert result.microscope == "Titan"
    assert result.acquired == datetime(2019, 12, 5, 10, 3, 44, tzinfo=UTC)
    assert result.pixel_size.unit == "pm" and result.pixel_size.x == pytest.approx(ref["axes"][2]["scale"])
    assert result.channels == [ref["metadata"]["General"]["title"]] == ["Ceta"] and result.detector == "BM-Ceta"
    assert result.metadata["Instrument.InstrumentModel"] == "Titan"
    assert result.warnings == [] and result.attachments == []
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
    assert result.acquired == datetime(2020, 10, 29, 13, 16, 16, tzinfo=UTC)
    assert result.pixel_size.unit == "pm" and result.pixel_size.x == pytest.approx(99.61991555830654)
    assert result.detector == "DF4"
    assert result.notes == [] and len(result.images) == 1
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


def test_diffraction_in_reciprocal_space_has_no_pixel_size_but_keeps_its_calibration(tmp_path, check_output):
    result = convert([sample("Camera Ceta Diffraction Micro.emd")], tmp_path, ConvertOptions())
    [ref] = reference("Camera Ceta Diffraction Micro.emd")
    x, y = ref["axes"][1], ref["axes"][0]
    assert x["units"] == "1 / nm"
    assert result.pixel_size is None
    assert result.metadata["Calibration X"] == f"{x['scale']:.6g} 1/nm"
    assert result.metadata["Calibration Y"] == f"{y['scale']:.6g} 1/nm"
    assert result.warnings == []  # a known calibration, not an unknown pixel size
    assert np.array_equal(tifffile.imread(result.output), ref["data"])
    seen = check_output(result)
    assert seen.physical == {}


def test_stem_haadf_pixel_size_from_rsciio(tmp_path, check_output):
    result = convert([sample("STEM HAADF Diffraction Micro.emd")], tmp_path, ConvertOptions())
    [ref] = reference("STEM HAADF Diffraction Micro.emd")
    assert ref["axes"][1]["units"] == "µm"
    assert (result.pixel_size.unit, result.pixel_size.x) == ("nm", pytest.approx(ref["axes"][1]["scale"] * 1000))
    assert result.channels == ["HAADF"] and result.shape["X"] == 128
    assert np.array_equal(tifffile.imread(result.output), ref["data"])
    check_output(result)


def test_eels_eds_images_of_two_shapes_and_every_spectrum(tmp_path, check_output, bioformats):
    name = "example_velox_EELS_EDS.emd"
    result = convert([sample(name)], tmp_path, ConvertOptions())
    images = reference(name, select_type="images")
    small = [r for r in images if r["data"].shape == (16, 20)]
    large = [r for r in images if r["data"].shape == (128, 128)]
    assert len(small) == 7 and len(large) == 1
    assert result.channels == [r["metadata"]["General"]["title"] for r in small]
    written = tifffile.imread(result.output)
    for plane, ref in zip(written, small):
        assert np.array_equal(plane, np.asarray(ref["data"], dtype=written.dtype))
    # the 128x128 image is an image of its own, named after its signal
    [other] = result.images[1:]
    title = large[0]["metadata"]["General"]["title"]
    assert other.title == title and other.path.name == f"example_velox_EELS_EDS [{title}].ome.tiff"
    assert np.array_equal(tifffile.imread(other.path), large[0]["data"])
    assert bioformats(other.path).sizes == {"T": 1, "C": 1, "Z": 1, "Y": 128, "X": 128}
    check_output(result)

    csvs = {a.title: a.path for a in result.attachments if a.kind == "spectrum-csv"}
    plots = [a.path for a in result.attachments if a.kind == "spectrum-plot"]
    assert len(csvs) == len(plots) == 6 + 1 + 3 and all(p.read_bytes().startswith(b"\x89PNG") for p in plots)
    # single EDS spectra: counts and energies as rsciio reads them
    spectra = reference(name, select_type="single_spectrum")
    for ref in spectra:
        detector = ref["original_metadata"]["BinaryResult"]["Detector"]
        header, rows = read_csv(csvs[f"EDS {detector} spectrum (CSV)"])
        axis = ref["axes"][-1]
        assert header == "energy (keV)"
        assert np.array_equal(rows[:, 1], ref["data"])
        assert rows[:, 0] == pytest.approx(axis["offset"] + axis["scale"] * np.arange(axis["size"]))
    # the EDS spectrum image (its streams) and the EELS spectrum images: their sum spectra
    cubes = reference(name, select_type="spectrum_image")
    eds = [c for c in cubes if c["metadata"]["Signal"]["signal_type"] == "EDS_TEM"]
    eels = [c for c in cubes if c["metadata"]["Signal"]["signal_type"] == "EELS"]
    assert len(eds) == 1 and len(eels) == 3
    _, rows = read_csv(csvs["EDS (sum of the spectrum image) spectrum (CSV)"])
    assert np.array_equal(rows[:, 1], np.asarray(eds[0]["data"]).sum(axis=(0, 1)))
    for cube in eels:
        axis = cube["axes"][-1]
        header, rows = read_csv(csvs[f"EELS from {axis['offset']:.4g} eV (sum of the spectrum image) spectrum (CSV)"])
        assert header == "energy (eV)"
        assert np.array_equal(rows[:, 1], np.asarray(cube["data"]).sum(axis=(0, 1)))
        assert rows[0, 0] == pytest.approx(axis["offset"]) and rows[1, 0] - rows[0, 0] == pytest.approx(axis["scale"])
    assert "Started acquisition" in result.metadata["Acquisition log"]
    # the first channels (EELS maps) carry no start time: the image takes the first channel's that does
    with h5py.File(sample(name)) as f:
        starts = [json.loads(bytes(g["Metadata"][:, 0]).rstrip(b"\0"))["Acquisition"].get("AcquisitionStartDatetime")
                  for g in f["Data/Image"].values() if g["Data"].shape == (16, 20, 1)]
    first = next(s["DateTime"] for s in starts if s)
    assert starts[0] is None and result.acquired == datetime.fromtimestamp(int(first), UTC)
    assert result.warnings == []
    assert not any(len(part) == 32 and part.isalnum() for a in result.accounted for part in
                   f"{a.source} {a.where}".split())  # no Velox uuid reaches the researcher


def test_spectrum_image_with_element_selection(tmp_path, check_output):
    name = "SI_empty_selection.emd"
    result = convert([sample(name)], tmp_path, ConvertOptions())
    [image] = reference(name, select_type="images")
    assert result.channels == [image["metadata"]["General"]["title"]]
    assert np.array_equal(tifffile.imread(result.output), image["data"])
    [cube] = reference(name, select_type="spectrum_image")
    csvs = {a.title: a.path for a in result.attachments if a.kind == "spectrum-csv"}
    assert len(csvs) == 4 + 1
    _, rows = read_csv(csvs["EDS (sum of the spectrum image) spectrum (CSV)"])
    axis = cube["axes"][-1]
    assert axis["size"] == 4096 and np.array_equal(rows[:, 1], np.asarray(cube["data"]).sum(axis=(0, 1)))
    assert rows[:, 0] == pytest.approx(axis["offset"] + axis["scale"] * np.arange(4096))
    check_output(result)


KIND_LABELS = {"Image": "image ", "Spectrum": "spectrum ", "SpectrumStream": "spectrum stream",
               "SpectrumImage": "spectrum image", "EelsSpectrumImage": "EELS ", "Text": "acquisition log"}


@pytest.mark.parametrize("name", VELOX_SAMPLES)
def test_every_dataset_of_the_file_is_accounted_for(tmp_path, name):
    result = convert([sample(name)], tmp_path, ConvertOptions())
    sources = [a.source for a in result.accounted]
    with h5py.File(sample(name)) as f:
        for kind, group in f["Data"].items():
            label = KIND_LABELS[kind]
            mine = [s for s in sources if s.startswith(label) and not (
                label == "spectrum " and s.startswith(("spectrum stream", "spectrum image")))]
            assert len(mine) == len(group), (kind, mine)
        for top in f:
            if top != "Data":
                assert top in sources
        # nothing else: one entry per signal and per other top-level item
        assert len(sources) == sum(len(group) for group in f["Data"].values()) + len(f) - 1
    for entry in result.accounted:
        assert entry.went in ("image", "channel", "attachment", "metadata", "not kept")
        if entry.went == "channel":
            assert set(entry.where.split(": ", 1)[1].split(", ")) <= set(result.channels)
        if entry.went == "image":
            assert entry.where in {f"{sample(name).stem} [{i.title}]" for i in result.images[1:]}


def test_spectra_without_any_image_get_a_plot_to_hang_on(tmp_path, bioformats):
    path = tmp_path / "spectra_only.emd"
    with h5py.File(sample("SI_empty_selection.emd")) as src, h5py.File(path, "w") as dst:
        for name in src:
            if name != "Data":
                src.copy(name, dst)
        for kind in ("Spectrum", "Text"):
            src.copy(f"Data/{kind}", dst.require_group("Data"), name=kind)
        first = json.loads(bytes(next(iter(src["Data/Spectrum"].values()))["Metadata"][:, 0]).rstrip(b"\0"))
    result = convert([path], tmp_path / "out", ConvertOptions())
    assert result.channels == ["red", "green", "blue"] and bioformats(result.output).sizes["C"] == 3
    start = int(first["Acquisition"]["AcquisitionStartDatetime"]["DateTime"])
    assert result.acquired == datetime.fromtimestamp(start, UTC)
    assert result.microscope == first["Instrument"]["InstrumentModel"]
    assert len([a for a in result.attachments if a.kind == "spectrum-csv"]) == 4
    plotted = [a for a in result.accounted if a.went == "image"]
    assert len(plotted) == 1 and "plot of the spectrum" in plotted[0].where
    assert result.warnings == []


@pytest.mark.parametrize("store", [dict(dtype=">u2"), dict(dtype="<u2", compression="gzip")])
def test_frames_read_at_their_offset_or_through_hdf5_are_the_same_pixels(tmp_path, store):
    """Frames in unfiltered (Y, X, 1) chunks are read at their file offset, others through HDF5: both
    give what h5py reads, byte order converted, a frame never written as HDF5's fill value."""
    path = tmp_path / "frames.emd"
    with h5py.File(sample("Camera Ceta Imaging Micro.emd")) as f, h5py.File(path, "w") as out:
        for key in f:
            if key != "Data":
                f.copy(key, out)
        [(uuid, group)] = f["Data/Image"].items()
        frame = group["Data"][:, :, 0].astype(np.uint16)
        target = out.create_group(f"Data/Image/{uuid}")
        target.create_dataset("Metadata", data=np.repeat(group["Metadata"][:, :1], 3, axis=1))
        data = target.create_dataset("Data", shape=(512, 512, 3), chunks=(512, 512, 1), fillvalue=7, **store)
        data[:, :, 0] = frame
        data[:, :, 2] = frame[::-1] + 1  # frame 1 is never written
    with h5py.File(path) as f:
        expected = next(iter(f["Data/Image"].values()))["Data"][()]
    result = convert([path], tmp_path, ConvertOptions())
    assert result.shape == {"T": 3, "C": 1, "Z": 1, "Y": 512, "X": 512}
    written = tifffile.imread(result.output)
    assert np.array_equal(written, np.moveaxis(expected, 2, 0))
    assert (written[1] == 7).all() and written.dtype == np.uint16
