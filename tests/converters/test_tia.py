"""TIA: the .emi with all its .ser files; a series is time, several .ser files are channels."""
from __future__ import annotations

import shutil
import struct
import warnings
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import tifffile

from converters import ConversionError, ConvertOptions, convert
from converters.base import SourceFile
from converters.formats import tia
from tests.helpers import sample

STOCKHOLM = ZoneInfo("Europe/Stockholm")


def reference(emi: str) -> np.ndarray:
    from rsciio.tia import file_reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signals = file_reader(str(sample(emi)))
    return np.stack([s["data"] for s in signals], axis=-3) if len(signals) > 1 else signals[0]["data"]


def ser_time(emi: str) -> datetime:
    """The first element's time tag as rsciio reads it (Unix seconds), as a UTC time."""
    times = np.atleast_1d(rsciio_signal(sample(emi))["original_metadata"]["ser_header_parameters"]["Time"])
    return datetime.fromtimestamp(int(times[0]), UTC)


def test_single_image_time_from_the_ser_time_tag(tmp_path, check_output):
    """The .ser's time tag is UTC; the .emi's AcquireDate (18:57:51) is this PC's clock, set to UTC too."""
    files = [sample("128x128_TEM_acquire-sum1.emi"), sample("128x128_TEM_acquire-sum1_1.ser")]
    result = convert(files, tmp_path, ConvertOptions(timezone=STOCKHOLM))
    assert np.array_equal(tifffile.imread(result.output), reference("128x128_TEM_acquire-sum1.emi"))
    assert result.shape == {"T": 1, "C": 1, "Z": 1, "Y": 128, "X": 128}
    assert result.acquired == ser_time("128x128_TEM_acquire-sum1.emi")
    assert result.acquired.isoformat() == "2016-02-22T18:57:53+00:00"
    assert result.microscope == "Microscope TalosF200X 200 kV D6308 XTwin"
    assert result.pixel_size.unit == "nm" and result.pixel_size.x == pytest.approx(21.479317511461325)
    assert result.metadata["ExperimentalDescription.High tension"] == "200 kV"
    check_output(result)


def test_series_becomes_time_axis(tmp_path, check_output):
    files = [sample("64x64x5_TEM_preview.emi"), sample("64x64x5_TEM_preview_1.ser")]
    options = ConvertOptions(microscope_names={"Microscope Tecnai 200 kV D2267 SuperTwin": "Tecnai T20"})
    result = convert(files, tmp_path, options)
    written = tifffile.imread(result.output)
    assert written.dtype == np.float32
    assert np.array_equal(written, reference("64x64x5_TEM_preview.emi"))
    assert result.shape == {"T": 5, "C": 1, "Z": 1, "Y": 64, "X": 64}
    assert result.microscope == "Tecnai T20"
    assert result.acquired == ser_time("64x64x5_TEM_preview.emi")
    assert result.acquired.isoformat() == "2016-02-21T16:49:05+00:00"  # AcquireDate 17:49:06 is CET
    assert result.channels == ["WA-Orius"] and result.detector == "WA-Orius"
    assert result.pixel_size.x == pytest.approx(6.281833616298531)
    check_output(result)


def test_two_detectors_become_channels(tmp_path, check_output):
    files = [sample(f"16x16_STEM_BF_DF_acquire{s}") for s in (".emi", "_1.ser", "_2.ser")]
    result = convert(files, tmp_path, ConvertOptions(timezone=STOCKHOLM))
    assert np.array_equal(tifffile.imread(result.output), reference("16x16_STEM_BF_DF_acquire.emi"))
    assert result.shape == {"T": 1, "C": 2, "Z": 1, "Y": 16, "X": 16}
    assert result.channels == ["BF", "DF4"]
    assert result.acquired == datetime(2016, 2, 21, 17, 53, 6, tzinfo=STOCKHOLM) == ser_time("16x16_STEM_BF_DF_acquire.emi")
    check_output(result)


def test_tenth_ser_file_is_included(tmp_path):
    """rsciio's glob stops at _9.ser; ten detectors must all arrive."""
    stem = "ten"
    shutil.copy(sample("16x16_STEM_BF_DF_acquire.emi"), tmp_path / f"{stem}.emi")
    sers = []
    for i in range(1, 11):
        ser = tmp_path / f"{stem}_{i}.ser"
        data = bytearray(sample("16x16_STEM_BF_DF_acquire_1.ser").read_bytes())
        sers.append(ser)
        ser.write_bytes(_with_pixels(data, i))
    result = convert([tmp_path / f"{stem}.emi", *reversed(sers)], tmp_path / "out", ConvertOptions())
    written = tifffile.imread(result.output)
    assert result.shape["C"] == 10 and written.shape == (10, 16, 16)
    assert [int(written[c].max()) for c in range(10)] == list(range(1, 11))  # in index order, _10 last
    assert result.channels == [f"series {i}" for i in range(1, 11)]


def _with_pixels(ser: bytearray, value: int) -> bytes:
    """The same SER with every pixel set to value (uint16, 16x16 after the 50-byte element header)."""
    (offset,) = struct.unpack_from("<I", ser, struct.unpack_from("<I", ser, 22)[0])
    start = offset + 50
    ser[start:start + 512] = np.full(256, value, "<u2").tobytes()
    return bytes(ser)


def test_ser_without_emi_is_refused(tmp_path):
    with pytest.raises(ConversionError, match=r"^64x64x5_TEM_preview_1\.ser needs its 64x64x5_TEM_preview\.emi"):
        convert([sample("64x64x5_TEM_preview_1.ser")], tmp_path, ConvertOptions())


def test_emi_without_ser_is_refused(tmp_path):
    with pytest.raises(ConversionError, match=r"has no \.ser file: expected 64x64x5_TEM_preview_1\.ser"):
        convert([sample("64x64x5_TEM_preview.emi")], tmp_path, ConvertOptions())


def test_emi_missing_one_of_its_sers_is_refused(tmp_path):
    files = [sample("16x16_STEM_BF_DF_acquire.emi"), sample("16x16_STEM_BF_DF_acquire_1.ser")]
    with pytest.raises(ConversionError, match=r"16x16_STEM_BF_DF_acquire_2\.ser is missing"):
        convert(files, tmp_path, ConvertOptions())


def test_truncated_series_names_frames_declared_and_held(tmp_path):
    shutil.copy(sample("64x64x5_TEM_preview.emi"), tmp_path / "x.emi")
    data = sample("64x64x5_TEM_preview_1.ser").read_bytes()
    # the offset array sits at the end of this file: keep it, drop the pixels of the last three frames
    (table,) = struct.unpack_from("<I", data, 22)
    offsets = struct.unpack_from("<5I", data, table)
    cut = data[:offsets[2] + 60]
    (tmp_path / "x_1.ser").write_bytes(cut + b"\0" * 0)
    with pytest.raises(ConversionError, match=r"x_1\.ser is truncated: header says 5 frames"):
        convert([tmp_path / "x.emi", tmp_path / "x_1.ser"], tmp_path / "out", ConvertOptions())


def _cut_emi(tmp_path, share: float) -> tuple[list, bytes]:
    """The 64x64x5 preview pair with its .emi cut to `share` of its bytes; the original .emi's bytes."""
    data = sample("64x64x5_TEM_preview.emi").read_bytes()
    (tmp_path / "x.emi").write_bytes(data[:int(len(data) * share)])
    shutil.copy(sample("64x64x5_TEM_preview_1.ser"), tmp_path / "x_1.ser")
    return [tmp_path / "x.emi", tmp_path / "x_1.ser"], data


@pytest.mark.parametrize("share", [0.001, 0.1, 0.5])
def test_emi_cut_before_its_metadata_is_named_truncated(tmp_path, share):
    """Was "x.emi is not a valid TIA EMI file: its content starts with the bytes 4a 4b 00 02", TIA's own."""
    files, data = _cut_emi(tmp_path, share)
    assert b"<ObjectInfo>" not in files[0].read_bytes()
    with pytest.raises(ConversionError) as refused:
        convert(files, tmp_path / "out", ConvertOptions())
    assert str(refused.value) == (f"x.emi is truncated or damaged: it holds none of the metadata XML (<ObjectInfo>) TIA "
                                  f"writes at its end (the file holds {int(len(data) * share)} bytes)")


def test_emi_cut_inside_its_metadata_is_named_truncated(tmp_path):
    """Converted before, with neither date nor microscope and no word of why."""
    files, data = _cut_emi(tmp_path, 0.9)
    start = data.index(b"<ObjectInfo>")
    assert start < int(len(data) * 0.9) < data.index(b"</ObjectInfo>")
    with pytest.raises(ConversionError) as refused:
        convert(files, tmp_path / "out", ConvertOptions())
    assert str(refused.value) == (f"x.emi is truncated: its metadata XML (<ObjectInfo> from byte {start}) is cut off "
                                  f"where the file ends, at byte {int(len(data) * 0.9)}")


def test_ser_whose_dimension_description_overruns_is_imported_without_a_pixel_unit(tmp_path):
    """The first dimension's description length (bytes 54-57) made RosettaSciIO, asked only for the
    calibration unit, read past the end: "could not be read: error: unpack requires a buffer of 4 bytes"."""
    for name in ("16x16_STEM_BF_DF_acquire.emi", "16x16_STEM_BF_DF_acquire_2.ser"):
        shutil.copy(sample(name), tmp_path / name)
    data = bytearray(sample("16x16_STEM_BF_DF_acquire_1.ser").read_bytes())
    data[55] ^= 0xFF
    assert struct.unpack_from("<I", data, 54)[0] > len(data)
    (tmp_path / "16x16_STEM_BF_DF_acquire_1.ser").write_bytes(bytes(data))
    result = convert([tmp_path / n for n in ("16x16_STEM_BF_DF_acquire.emi", "16x16_STEM_BF_DF_acquire_1.ser",
                                            "16x16_STEM_BF_DF_acquire_2.ser")], tmp_path / "out", ConvertOptions())
    assert result.pixel_size is None and "pixel size unknown" in result.warnings
    assert result.shape == {"T": 1, "C": 2, "Z": 1, "Y": 16, "X": 16}


def rsciio_signal(emi) -> dict:
    from rsciio.tia import file_reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return file_reader(str(emi))[0]  # the first series


def test_search_image_pixel_size_date_and_microscope_as_rsciio_reads_them(tmp_path, check_output):
    files = [sample("128x128-TEM_search.emi"), sample("128x128-TEM_search_1.ser")]
    ref = rsciio_signal(files[0])
    result = convert(files, tmp_path, ConvertOptions(timezone=STOCKHOLM))
    y, x = ref["axes"]
    assert (x["units"], y["units"]) == ("nm", "nm")
    assert (result.pixel_size.x, result.pixel_size.y) == (pytest.approx(x["scale"]), pytest.approx(y["scale"]))
    assert result.acquired == ser_time("128x128-TEM_search.emi")
    microscope = ref["original_metadata"]["ObjectInfo"]["ExperimentalDescription"]["Microscope"]
    assert result.microscope == microscope.split(" (")[0] == "Microscope TalosF200X 200 kV D6308 XTwin"
    assert np.array_equal(tifffile.imread(result.output), ref["data"])
    check_output(result)


def _edited_emi(tmp_path, old: bytes, new: bytes) -> list:
    """The 128x128 acquisition with a same-length edit inside its .emi metadata."""
    assert len(old) == len(new)
    data = sample("128x128_TEM_acquire-sum1.emi").read_bytes()
    assert data.count(old) == 1
    (tmp_path / "d.emi").write_bytes(data.replace(old, new))
    shutil.copy(sample("128x128_TEM_acquire-sum1_1.ser"), tmp_path / "d_1.ser")
    return [tmp_path / "d.emi", tmp_path / "d_1.ser"]


def test_diffraction_pattern_calibration_is_reciprocal_not_a_pixel_size(tmp_path, check_output):
    """The real-file bug: a diffraction pattern got a 42,464,134 m pixel; its calibration is in 1/m."""
    files = _edited_emi(tmp_path, b"TEM uP SA Zoom Image", b"TEM uP Diffraction  ")
    ref = rsciio_signal(files[0])
    y, x = ref["axes"]
    assert x["units"] == "1 / nm"  # rsciio reads this mode as reciprocal space
    result = convert(files, tmp_path / "out", ConvertOptions())
    assert result.pixel_size is None
    assert result.metadata["Calibration X"] == f"{x['scale']:.6g} 1/nm"
    assert result.metadata["Calibration Y"] == f"{y['scale']:.6g} 1/nm"
    image = tia.read(files, ConvertOptions())
    assert image.warnings == []  # a reciprocal calibration is known, not missing
    check_output(result)


def test_unknown_mode_means_pixel_size_unknown_not_guessed(tmp_path):
    files = _edited_emi(tmp_path, b"<Label>Mode</Label>", b"<Label>Mxde</Label>")
    image = tia.read(files, ConvertOptions())
    assert image.pixel_size is None and image.warnings == ["pixel size unknown"]
    assert float(image.metadata["d_1.ser.CalibrationDeltaX"]) == pytest.approx(2.1479317511461325e-08)


def test_spectrum_image_keeps_its_sum_spectrum():
    stem = "16x16-spectrum_image_5x5x4000-not_square"
    files = [sample(f"{stem}.emi"), sample(f"{stem}_1.ser")]
    ref = rsciio_signal(files[0])
    energy = ref["axes"][-1]
    assert ref["data"].shape == (5, 5, 4000) and (energy["units"], energy["scale"]) == ("eV", 5.0)
    result = tia.read(files, ConvertOptions())
    assert isinstance(result, SourceFile) and result.images == []
    assert result.acquired == ser_time(f"{stem}.emi")
    assert result.microscope == ref["original_metadata"]["ObjectInfo"]["ExperimentalDescription"]["Microscope"]
    assert result.metadata[f"{stem}_1.ser.ValidNumberElements"] == "25"
    (spectrum,) = result.spectra
    assert np.array_equal(spectrum.counts, ref["data"].sum(axis=(0, 1)))
    assert (spectrum.offset, spectrum.scale, spectrum.unit) == (energy["offset"], energy["scale"], "eV")
    assert spectrum.title == "Spectrum (sum of the spectrum image)"
    (row,) = result.accounted
    assert (row.source, row.went) == (f"spectrum image {stem}_1.ser", "not kept")
    assert row.where.startswith("kept in the original file")


def test_emi_date_in_facility_zone_when_the_ser_has_no_time_tag(tmp_path):
    shutil.copy(sample("128x128_TEM_acquire-sum1.emi"), tmp_path / "n.emi")
    ser = bytearray(sample("128x128_TEM_acquire-sum1_1.ser").read_bytes())
    ser[10:14] = (0).to_bytes(4, "little")  # TagTypeID: no tags
    (tmp_path / "n_1.ser").write_bytes(bytes(ser))
    image = tia.read([tmp_path / "n.emi", tmp_path / "n_1.ser"], ConvertOptions(timezone=STOCKHOLM))
    info = rsciio_signal(sample("128x128_TEM_acquire-sum1.emi"))["original_metadata"]["ObjectInfo"]
    assert info["AcquireDate"] == "Mon Feb 22 18:57:51 2016"
    assert image.acquired == datetime(2016, 2, 22, 18, 57, 51, tzinfo=STOCKHOLM)


def test_spectrum_image_converts_to_its_sum_spectrum_plot_and_csv(tmp_path):
    """Through the registry: a file of spectra only gets its sum spectrum's plot as its image."""
    files = [sample("16x16-spectrum_image_5x5x4000-not_square.emi"),
             sample("16x16-spectrum_image_5x5x4000-not_square_1.ser")]
    ref = rsciio_signal(files[0])
    result = convert(files, tmp_path, ConvertOptions())
    assert len(result.images) == 1 and result.images[0].shape["C"] == 3  # the plot, as RGB
    assert result.acquired == ser_time("16x16-spectrum_image_5x5x4000-not_square.emi")
    (csv,) = [a for a in result.attachments if a.kind == "spectrum-csv"]
    assert [a.kind for a in result.attachments].count("spectrum-plot") == 1
    rows = np.loadtxt(csv.path, delimiter=",", skiprows=1)
    energy = ref["axes"][-1]
    assert np.allclose(rows[:, 0], energy["offset"] + energy["scale"] * np.arange(4000))
    assert np.array_equal(rows[:, 1], ref["data"].sum(axis=(0, 1)))
