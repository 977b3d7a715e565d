"""Gatan DigitalMicrograph DM3/DM4: images with their calibration, spectra kept, dates from the
unambiguous source first; expected values read independently with RosettaSciIO (non-lazy)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import warnings
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import tifffile

from converters import ConvertOptions, convert
from converters.base import SourceFile
from converters.formats import dm
from tests.helpers import ROOT, sample

STOCKHOLM = ZoneInfo("Europe/Stockholm")


def reference(name: str) -> dict:
    from rsciio.digitalmicrograph import file_reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (signal,) = file_reader(str(sample(name)))
    return signal


@pytest.mark.parametrize("name", ["dmTest_float32_nonSquare_diffPixelSize.dm3",
                                  "dmTest_float32_nonSquare_diffPixelSize.dm4"])
def test_image_with_different_x_and_y_pixel_sizes(tmp_path, check_output, name):
    ref = reference(name)
    (y, x) = ref["axes"]
    assert (x["units"], y["units"]) == ("nm", "A")  # 1 nm by 2 Å, as the file says
    result = convert([sample(name)], tmp_path, ConvertOptions())
    assert np.array_equal(tifffile.imread(result.output), ref["data"])
    assert result.shape == {"T": 1, "C": 1, "Z": 1, "Y": 64, "X": 128}
    assert (result.pixel_size.x, result.pixel_size.y, result.pixel_size.unit) == (x["scale"], y["scale"] / 10, "nm")
    assert result.channels == ["dmTest_float32_nonSquare_diffPixelSize"]
    assert result.metadata["ImageData.Calibrations.Dimension.TagGroup1.Units"] == "A"
    # this test file names no microscope and no date: said, not invented
    assert result.microscope is None and result.acquired is None
    image = dm.read([sample(name)], ConvertOptions())
    assert image.warnings == ["acquisition date unknown", "microscope unknown"]
    check_output(result)


def test_spectrum_only_file_keeps_its_spectrum():
    ref = reference("08_carbon.dm3")
    energy = ref["axes"][-1]
    result = dm.read([sample("08_carbon.dm3")], ConvertOptions(timezone=STOCKHOLM))
    assert isinstance(result, SourceFile) and result.images == []
    # what its plot's image carries: DataBar 8/29/2017 1:58:43 PM, the Microscope Info panel's name
    tags = ref["original_metadata"]["ImageList"]["TagGroup0"]["ImageTags"]
    assert result.acquired == datetime(2017, 8, 29, 13, 58, 43, tzinfo=STOCKHOLM)
    assert result.microscope == tags["Microscope Info"]["Microscope"]
    assert result.metadata["ImageTags.EELS.Acquisition.Spectrometer.Dispersion (eV/ch)"] == str(
        tags["EELS"]["Acquisition"]["Spectrometer"]["Dispersion (eV/ch)"])
    (spectrum,) = result.spectra
    assert spectrum.title == "EELS" and spectrum.unit == energy["units"] == "eV"
    assert (spectrum.offset, spectrum.scale) == (energy["offset"], energy["scale"])
    assert spectrum.scale == pytest.approx(0.1) and len(spectrum.counts) == 2048
    assert np.array_equal(spectrum.counts, np.asarray(ref["data"]).ravel())
    assert [(a.source, a.went) for a in result.accounted] == [("spectrum 08_carbon", "attachment")]


def _tags(name: str) -> dict:
    return reference(name)["original_metadata"]["ImageList"]["TagGroup0"]["ImageTags"]


def test_microscope_and_databar_date_of_a_real_file():
    """08_carbon: DataBar 8/29/2017 1:58:43 PM (29 cannot be a month), Microscope Info names the TEAM 0.5."""
    tags = _tags("08_carbon.dm3")
    assert (tags["DataBar"]["Acquisition Date"], tags["DataBar"]["Acquisition Time"]) == ("8/29/2017", "1:58:43 PM")
    assert dm._acquired(tags, ConvertOptions(timezone=STOCKHOLM)) == (
        datetime(2017, 8, 29, 13, 58, 43, tzinfo=STOCKHOLM), [])
    assert dm._first(tags, dm._MICROSCOPE) == tags["Microscope Info"]["Microscope"] == "NCEM TEAM 0.5"
    assert dm._first(tags, dm._DETECTOR) == tags["Acquisition"]["Device"]["Name"] == "EF-CCD"


def test_filetime_wins_over_locale_dependent_text():
    tags = {"DataBar": {"Acquisition Date": "3/4/2022", "Acquisition Time": "4:40:37 PM",
                        "Acquisition Time (OS)": 1.3309980037321494e17}}
    acquired, notes = dm._acquired(tags, ConvertOptions(timezone=STOCKHOLM))
    # 1.3309980037321494e17 x 100 ns after 1601-01-01 UTC, counted with plain arithmetic
    expected = datetime.fromtimestamp(1.3309980037321494e17 / 1e7 - 11644473600, UTC)
    assert abs(acquired - expected) < timedelta(milliseconds=1) and notes == []


def test_epoch_milliseconds_before_text():
    tags = {"Acquisition": {"Frame": {"Sequence": {"Acquisition Start Time (epoch)": 1665506437321.0}}},
            "DataBar": {"Acquisition Date": "3/4/2022", "Acquisition Time": "4:40:37 PM"}}
    acquired, _ = dm._acquired(tags, ConvertOptions())
    assert acquired == datetime.fromtimestamp(1665506437.321, UTC)


@pytest.mark.parametrize("date, time, expected", [
    ("29.08.2017", "13:58:43", datetime(2017, 8, 29, 13, 58, 43)),
    ("2017-08-29", "1:58:43 PM", datetime(2017, 8, 29, 13, 58, 43)),
    ("29/8/2017", "13:58:43", datetime(2017, 8, 29, 13, 58, 43)),
    ("4/4/2017", "09:00:00", datetime(2017, 4, 4, 9, 0, 0)),
])
def test_unambiguous_date_text_in_facility_zone(date, time, expected):
    tags = {"DataBar": {"Acquisition Date": date, "Acquisition Time": time}}
    assert dm._acquired(tags, ConvertOptions(timezone=STOCKHOLM)) == (expected.replace(tzinfo=STOCKHOLM), [])


def test_ambiguous_date_text_is_not_guessed():
    tags = {"DataBar": {"Acquisition Date": "3/4/2017", "Acquisition Time": "10:00:00"}}
    acquired, notes = dm._acquired(tags, ConvertOptions())
    assert acquired is None and "3/4/2017 10:00:00 could not be read unambiguously" in notes[0]


def _dm4(target, shape: tuple[int, ...], write_pixels) -> None:
    """The dm4 sample reshaped to `shape` ((T,) Y, X) float32, its pixels written by write_pixels(file).

    Its array length and its Dimensions (tags after the pixels: DM4 sorts them by name) are rewritten;
    a third dimension is the second's tag repeated with the group's count raised (rsciio reads it so)."""
    data = sample("dmTest_float32_nonSquare_diffPixelSize.dm4").read_bytes()
    array = b"%%%%" + (3).to_bytes(8, "big") + (20).to_bytes(8, "big") + (6).to_bytes(8, "big")  # float32 array
    at = data.index(array + (128 * 64).to_bytes(8, "big")) + len(array)
    tail = bytearray(data[at + 8 + 128 * 64 * 4:])
    group = tail.index(b"\nDimensions") + len(b"\nDimensions")
    dim = b"%%%%" + (1).to_bytes(8, "big") + (5).to_bytes(8, "big")  # one uint32
    ends = []
    for old, new in ((128, shape[-1]), (64, shape[-2])):
        i = tail.index(dim + old.to_bytes(4, "little"), group) + len(dim)
        tail[i:i + 4] = new.to_bytes(4, "little")
        ends.append(i + 4)
    if len(shape) == 3:
        count = group + 8 + 2  # after the group's size and its sorted and open flags
        tail[count:count + 8] = (3).to_bytes(8, "big")
        tail[ends[1]:ends[1]] = tail[ends[0]:ends[1] - 4] + shape[0].to_bytes(4, "little")
    with open(target, "wb") as f:
        f.write(data[:at] + math.prod(shape).to_bytes(8, "big"))
        write_pixels(f)
        f.write(tail)


def test_image_stack_is_a_time_series(tmp_path, check_output):
    frames = np.random.default_rng(5).random((3, 16, 24)).astype("<f4")
    _dm4(tmp_path / "stack.dm4", frames.shape, lambda f: f.write(frames.tobytes()))
    from rsciio.digitalmicrograph import file_reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (ref,) = file_reader(str(tmp_path / "stack.dm4"))
    assert [a["navigate"] for a in ref["axes"]] == [True, False, False]  # rsciio: one image per frame
    result = convert([tmp_path / "stack.dm4"], tmp_path / "out", ConvertOptions())
    assert result.shape == {"T": 3, "C": 1, "Z": 1, "Y": 16, "X": 24}
    assert np.array_equal(tifffile.imread(result.output), ref["data"])
    check_output(result)


def test_large_image_converts_in_bounded_memory(tmp_path):
    """256 MiB of pixels convert in a fresh process whose memory grows by less than half the pixels' size."""
    ny = nx = 8192

    def gradient(f):  # row y holds x + y, written in bands
        for y in range(0, ny, 256):
            f.write((np.arange(nx, dtype="<f4") + np.arange(y, y + 256, dtype="<f4")[:, None]).tobytes())

    _dm4(tmp_path / "big.dm4", (ny, nx), gradient)
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        import rsciio.digitalmicrograph  # what reading imports (dask, numba...): counted apart from the pixels
        from converters import ConvertOptions, convert, registry
        registry.plugins()

        def status(field):
            return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field))

        before = status("VmRSS:")
        result = convert([{str(tmp_path / "big.dm4")!r}], {str(tmp_path / "out")!r}, ConvertOptions())
        grown = status("VmHWM:") - before
        print(json.dumps({{"shape": result.shape, "output": str(result.output), "grown_kib": grown}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["shape"] == {"T": 1, "C": 1, "Z": 1, "Y": ny, "X": nx}
    assert report["grown_kib"] < 128 * 1024  # the pixels alone are 256 MiB
    written = tifffile.imread(report["output"])
    for y in (0, 1, 4097, ny - 1):
        assert np.array_equal(written[y], np.arange(nx, dtype="f4") + y)


def test_spectrum_image_is_summed_over_its_pixels(tmp_path):
    """A GMS spectrum image as rsciio hands it over: one image per energy channel (energy first, its
    navigation axis), marked "Spectrum image" in Meta Data; its sum spectrum is kept, the cube is not."""
    cube = np.random.default_rng(3).integers(0, 100, (40, 3, 2)).astype("<f4")  # (E, Y, X) as stored
    (tmp_path / "si.raw").write_bytes(b"\0" * 16 + cube.tobytes())
    axes = [{"size": 40, "navigate": True, "scale": 5.0, "offset": 100.0, "units": "eV"},
            {"size": 3, "navigate": False, "scale": 1.0, "offset": 0.0, "units": "nm"},
            {"size": 2, "navigate": False, "scale": 1.0, "offset": 0.0, "units": "nm"}]
    signal = {"data": np.empty(cube.shape, "f4"), "axes": axes, "metadata": {"Signal": {"signal_type": "EDS_TEM"}}}
    tags = {"ImageTags": {"Meta Data": {"Format": "Spectrum image"}},
            "ImageData": {"DataType": 2, "Data": {"offset": 16, "size": cube.size, "endian": "little"}}}
    assert dm._kind(signal, tags) == "spectrum image"
    spectrum = dm._spectrum(tmp_path / "si.raw", signal, tags, "SI", "spectrum image")
    assert np.array_equal(spectrum.counts, cube.sum(axis=(1, 2)))
    assert (spectrum.title, spectrum.offset, spectrum.scale, spectrum.unit) == (
        "EDS (sum of the spectrum image)", 100.0, 5.0, "eV")
    assert dm._kind(signal, {"ImageTags": {}}) == "image"  # without the mark: an image stack
