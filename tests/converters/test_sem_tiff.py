"""SEM TIFF: Zeiss SmartSEM (tag 34118) and Thermo Fisher/FEI (34680/34682)."""
from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import tifffile

from converters import ConvertOptions, convert
from tests.helpers import sample

STOCKHOLM = ZoneInfo("Europe/Stockholm")


def raw_tag(path, code: int) -> bytes:
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages.first.tags[code]
        tif.filehandle.seek(tag.valueoffset)
        return tif.filehandle.read(tag.count)


def rsciio_scale(path) -> float:
    """The X pixel size in metres as RosettaSciIO reads the file (eagerly: its lazy read leaves the file open)."""
    from rsciio.tiff import file_reader

    x = file_reader(str(path))[0]["axes"][-1]
    assert x["units"] == "m"
    return x["scale"]


def test_zeiss_merlin(tmp_path, check_output):
    path = sample("test_tiff_Zeiss_SEM_1k.tif")
    result = convert([path], tmp_path, ConvertOptions(timezone=STOCKHOLM))
    written = tifffile.imread(result.output)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.photometric == tifffile.PHOTOMETRIC.PALETTE
        assert np.array_equal(written, tif.pages.first.asarray())  # raw palette indices, not colours
    assert result.shape == {"T": 1, "C": 1, "Z": 1, "Y": 768, "X": 1024}
    assert result.microscope == "Merlin"
    assert result.acquired == datetime(2015, 12, 23, 9, 40, 32, tzinfo=STOCKHOLM)
    assert (result.pixel_size.x, result.pixel_size.unit) == (pytest.approx(rsciio_scale(path) * 1e6), "µm")
    assert result.pixel_size.x == pytest.approx(2.615, rel=1e-3)  # its label, rounded
    assert result.channels == ["HE-SE2"] and result.detector == "HE-SE2"
    assert result.metadata["Image Pixel Size"] == "2.615 µm"
    check_output(result)


def test_zeiss_gemini(tmp_path, check_output):
    result = convert([sample("sample6_001.tif")], tmp_path, ConvertOptions(timezone=STOCKHOLM))
    assert np.array_equal(tifffile.imread(result.output), tifffile.imread(sample("sample6_001.tif")))
    assert result.microscope == "GeminiSEM 450"
    assert result.acquired.isoformat() == "2025-03-03T14:52:42+01:00"
    assert (result.pixel_size.x, result.pixel_size.unit) == (pytest.approx(rsciio_scale(sample("sample6_001.tif")) * 1e9), "nm")
    assert result.pixel_size.x == pytest.approx(4.99, rel=1e-3)
    assert result.channels == ["Sense BSD"]
    check_output(result)


def _zeiss_variant(tmp_path, data: np.ndarray, edit) -> tifffile.TiffFile:
    """The Gemini sample's SmartSEM block, edited, on other pixels."""
    tag = edit(raw_tag(sample("sample6_001.tif"), 34118))
    path = tmp_path / "variant.tif"
    tifffile.imwrite(path, data, extratags=[(34118, 1, len(tag), tag, False)])
    return path


def test_zeiss_other_width_uses_image_pixel_size_not_display_pixel_size(tmp_path):
    data = np.repeat(np.repeat(tifffile.imread(sample("sample6_001.tif")), 2, 0), 2, 1)  # 2048 px wide
    path = _zeiss_variant(tmp_path, data, lambda t: t.replace(b"Image Pixel Size = 4.990 nm",
                                                              b"Image Pixel Size = 2.495 nm"))
    result = convert([path], tmp_path / "out", ConvertOptions())
    assert result.shape["X"] == 2048
    assert (result.pixel_size.x, result.pixel_size.unit) == (pytest.approx(rsciio_scale(path) * 1e9), "nm")
    assert result.pixel_size.x == pytest.approx(2.495, rel=1e-3)


def test_zeiss_without_image_pixel_size_uses_width(tmp_path):
    data = tifffile.imread(sample("sample6_001.tif"))[:, :512]

    def edit(tag: bytes) -> bytes:  # older SmartSEM: no unlabelled SI value, no image pixel size
        tag = tag.replace(b"0\r\n0\r\n0\r\n4.990418e-09\r\n", b"0\r\n0\r\n0\r\n0\r\n", 1)
        tag = re.sub(rb"AP_IMAGE_PIXEL_SIZE\r\n[^\r]*\r\n", b"", tag)
        return tag.replace(b"Width = 5.110 \xb5m", b"Width = 2.555 \xb5m")

    result = convert([_zeiss_variant(tmp_path, data, edit)], tmp_path / "out", ConvertOptions())
    assert (result.pixel_size.x, result.pixel_size.unit) == (pytest.approx(2.555e3 / 512), "nm")


def test_fei_helios_data_bar_cropped_and_pm_time(tmp_path, check_output):
    path = sample("FEI-Helios-Ebeam-8bits.tif")
    result = convert([path], tmp_path, ConvertOptions(timezone=STOCKHOLM))
    full = tifffile.imread(path)
    assert full.shape == (471, 512)
    assert np.array_equal(tifffile.imread(result.output), full[:442])  # the bottom 29 rows are the data bar
    assert result.shape == {"T": 1, "C": 1, "Z": 1, "Y": 442, "X": 512}
    assert result.acquired == datetime(2016, 6, 13, 17, 6, 40, tzinfo=STOCKHOLM)  # 05:06:40 PM
    assert result.microscope == "Helios NanoLab 660"
    assert (result.pixel_size.x, result.pixel_size.unit) == (pytest.approx(3.3724), "µm")
    assert result.channels == ["ETD SE"] and result.detector == "ETD"
    assert result.metadata["PrivateFei.DatabarHeight"] == "29"
    assert result.notes == ["the data bar (29 rows at the bottom) was cropped"]
    check_output(result)


def test_fei_am_time(tmp_path):
    tag = raw_tag(sample("FEI-Helios-Ebeam-8bits.tif"), 34682).replace(b"05:06:40 PM", b"12:06:40 AM")
    path = tmp_path / "am.tif"
    tifffile.imwrite(path, tifffile.imread(sample("FEI-Helios-Ebeam-8bits.tif")),
                     extratags=[(34682, 2, len(tag), tag.decode("ascii"), False)])
    result = convert([path], tmp_path / "out", ConvertOptions(timezone=STOCKHOLM))
    assert result.acquired == datetime(2016, 6, 13, 0, 6, 40, tzinfo=STOCKHOLM)


def test_compressed_sem_tiff_is_decoded(tmp_path):
    data = tifffile.imread(sample("sample6_001.tif"))
    tag = raw_tag(sample("sample6_001.tif"), 34118)
    path = tmp_path / "packed.tif"
    tifffile.imwrite(path, data, compression="zlib", rowsperstrip=64, extratags=[(34118, 1, len(tag), tag, False)])
    result = convert([path], tmp_path / "out", ConvertOptions())
    assert np.array_equal(tifffile.imread(result.output), data)
    assert result.microscope == "GeminiSEM 450"


def test_zeiss_without_model_named_by_serial_number(tmp_path):
    """The file that went to Project "Undefined": its model tag is gone, its serial number names it."""
    data = tifffile.imread(sample("sample6_001.tif"))
    tag = raw_tag(sample("sample6_001.tif"), 34118)
    serial = re.search(rb"Serial No\. = ([^\r]*)\r", tag)[1].decode()
    path = _zeiss_variant(tmp_path, data, lambda t: re.sub(rb"DP_SEM\r\n[^\r]*\r\n", b"", t))
    result = convert([path], tmp_path / "out", ConvertOptions())
    assert result.microscope == serial == "GeminiSEM 450-8216010121"


def test_sem_warnings_name_what_is_unknown(tmp_path):
    from converters.formats import fei_sem, zeiss_sem

    assert zeiss_sem.read([sample("sample6_001.tif")], ConvertOptions()).warnings == []
    assert fei_sem.read([sample("FEI-Helios-Ebeam-8bits.tif")], ConvertOptions()).warnings == []
    data = tifffile.imread(sample("sample6_001.tif"))[:, :512]

    def strip(tag: bytes) -> bytes:  # no date, no size, nothing naming the instrument
        tag = tag.replace(b"0\r\n0\r\n0\r\n4.990418e-09\r\n", b"0\r\n0\r\n0\r\n0\r\n", 1)
        for key in (rb"AP_DATE", rb"AP_IMAGE_PIXEL_SIZE", rb"AP_WIDTH", rb"DP_SEM", rb"SV_SERIAL_NUMBER",
                    rb"DP_COLUMN_TYPE"):
            tag = re.sub(key + rb"\r\n[^\r]*\r\n", b"", tag)
        return tag

    image = zeiss_sem.read([_zeiss_variant(tmp_path, data, strip)], ConvertOptions())
    assert image.warnings == ["acquisition date unknown", "microscope unknown", "pixel size unknown"]


def test_zeiss_without_its_date_takes_the_tiff_datetime_in_facility_zone(tmp_path):
    data = tifffile.imread(sample("sample6_001.tif"))
    tag = re.sub(rb"AP_DATE\r\n[^\r]*\r\n", b"", raw_tag(sample("sample6_001.tif"), 34118))
    path = tmp_path / "dated.tif"
    tifffile.imwrite(path, data, datetime="2025:03:03 14:52:40", extratags=[(34118, 1, len(tag), tag, False)])
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.tags[306].value == "2025:03:03 14:52:40"
    result = convert([path], tmp_path / "out", ConvertOptions(timezone=STOCKHOLM))
    assert result.acquired == datetime(2025, 3, 3, 14, 52, 40, tzinfo=STOCKHOLM)
