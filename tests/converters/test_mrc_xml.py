"""MRC + ATLAS/EPU XML: pixels from the MRC, metadata from the XML; an XML without its MRC is refused."""
from __future__ import annotations

import shutil
import warnings
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import mrcfile
import numpy as np
import pytest
import tifffile

from converters import ConversionError, ConvertOptions, convert
from tests.helpers import sample

TALOS = {"TALOS-12TAN18C": "Talos L120C"}


def pair(tmp_path, mrc: str, xml_text: str | None = None):
    """A sample MRC and Atlas_1.xml side by side under one stem, as EPU writes them (a Direct
    Electron movie keeps its name: that is how it is known)."""
    stem = mrc.removesuffix(".mrc") if mrc.endswith("_movie.mrc") else "Atlas_1"
    shutil.copy(sample(mrc), tmp_path / f"{stem}.mrc")
    if xml_text is None:
        shutil.copy(sample("Atlas_1.xml"), tmp_path / f"{stem}.xml")
    else:
        (tmp_path / f"{stem}.xml").write_text(xml_text, encoding="utf-8")
    return [tmp_path / f"{stem}.mrc", tmp_path / f"{stem}.xml"]


def reference(mrc: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Map ID string not found": the reason to be permissive
        with mrcfile.open(sample(mrc), permissive=True) as m:
            return m.data.copy()


@pytest.mark.parametrize("mrc, shape", [
    ("temp.mrc", {"T": 3, "C": 1, "Z": 1, "Y": 128, "X": 128}),
    ("20241021_00405_final.mrc", {"T": 1, "C": 1, "Z": 1, "Y": 4, "X": 8}),
    ("Custom_movie.mrc", {"T": 30, "C": 1, "Z": 1, "Y": 16, "X": 16}),  # Direct Electron movies
    ("ROI_Random_Scan_movie.mrc", {"T": 348, "C": 1, "Z": 1, "Y": 16, "X": 16}),
])
def test_pixels_from_mrc_metadata_from_xml(tmp_path, check_output, mrc, shape):
    result = convert(pair(tmp_path, mrc), tmp_path / "out", ConvertOptions(microscope_names=TALOS))
    assert np.array_equal(tifffile.imread(result.output), reference(mrc).reshape(tifffile.imread(result.output).shape))
    assert result.shape == shape
    assert result.microscope == "Talos L120C"
    assert result.acquired == datetime(2023, 6, 2, 15, 3, 39, 196274, tzinfo=timezone(timedelta(hours=2)))
    assert result.acquired.utcoffset() == timedelta(hours=2)
    assert result.pixel_size.unit == "nm" and result.pixel_size.x == pytest.approx(515.1999913332518)
    assert result.channels == ["BM-Ceta"] and result.detector == "BM-Ceta"
    assert result.metadata["microscopeData.instrument.InstrumentModel"] == "TALOS-12TAN18C"
    assert result.metadata["CustomData.NumberOfTilesAcquired"] == "36"
    assert result.metadata["MRC.nx"] == str(shape["X"])
    check_output(result)


def _without_pixel_size(text: str) -> str:
    start, end = text.index("<SpatialScale>"), text.index("</SpatialScale>") + len("</SpatialScale>")
    return text[:start] + text[end:]


@pytest.mark.parametrize("mrc", ["20241021_00405_final.mrc", "Custom_movie.mrc"])  # -1 and -10 in the headers
def test_negative_header_pixel_size_is_unknown_not_1nm(tmp_path, check_output, mrc):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.open(sample(mrc), permissive=True) as m:
            assert m.voxel_size.x < 0  # what the header says, read independently
    xml = _without_pixel_size(sample("Atlas_1.xml").read_text(encoding="utf-8"))
    result = convert(pair(tmp_path, mrc, xml), tmp_path / "out", ConvertOptions())
    assert result.pixel_size is None and "pixel size unknown" in result.warnings
    assert result.microscope == "TALOS-12TAN18C"  # no mapping given: the raw name, cleaned
    check_output(result)


def test_header_pixel_size_used_when_xml_has_none(tmp_path):
    xml = _without_pixel_size(sample("Atlas_1.xml").read_text(encoding="utf-8"))
    result = convert(pair(tmp_path, "temp.mrc", xml), tmp_path / "out", ConvertOptions())
    assert (result.pixel_size.x, result.pixel_size.unit) == (pytest.approx(200.0), "pm")  # 2 Å


def test_zero_header_pixel_size_is_unknown(tmp_path):
    xml = _without_pixel_size(sample("Atlas_1.xml").read_text(encoding="utf-8"))
    files = pair(tmp_path, "temp.mrc", xml)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.open(files[0], "r+", permissive=True) as m:
            m.voxel_size = 0
    assert convert(files, tmp_path / "out", ConvertOptions()).pixel_size is None


def test_fei_extended_header_fields_are_kept(tmp_path):
    data = np.arange(2 * 16 * 24, dtype=np.int16).reshape(2, 16, 24)
    path = tmp_path / "Atlas_1.mrc"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.new(path) as m:
            m.set_data(data)
            ext = np.zeros(2, dtype=mrcfile.dtypes.get_ext_header_dtype(b"FEI1"))
            ext["Metadata size"] = ext.dtype.itemsize
            ext["Microscope type"] = b"Krios"
            ext["HT"] = 300000.0
            ext["Pixel size X"] = ext["Pixel size Y"] = 1.25e-10  # metres
            m.set_extended_header(ext)
            m.header.exttyp = b"FEI1"
    # without its model and pixel size: the FEI header gives them
    xml = _without_pixel_size(sample("Atlas_1.xml").read_text(encoding="utf-8"))
    (tmp_path / "Atlas_1.xml").write_text(xml.replace("<InstrumentModel>TALOS-12TAN18C</InstrumentModel>", ""))
    result = convert([path, tmp_path / "Atlas_1.xml"], tmp_path / "out", ConvertOptions())
    assert np.array_equal(tifffile.imread(result.output), data)
    assert result.metadata["FEI.Microscope type"] == "Krios" and result.microscope == "Krios"
    assert (result.pixel_size.x, result.pixel_size.unit) == (pytest.approx(125.0), "pm")
    assert result.metadata["FEI.HT"] == "300000.0"


def test_xml_without_mrc_is_refused(tmp_path):
    with pytest.raises(ConversionError, match=r"^Atlas_1\.xml needs its image Atlas_1\.mrc"):
        convert([sample("Atlas_1.xml")], tmp_path, ConvertOptions())


def test_truncated_mrc_names_what_header_says_and_file_holds(tmp_path):
    files = pair(tmp_path, "temp.mrc")
    files[0].write_bytes(sample("temp.mrc").read_bytes()[:1024 + 128 * 128 * 4 + 100])
    with pytest.raises(ConversionError, match=r"Atlas_1\.mrc is truncated: header says 3 sections of 128x128 float32 "
                                              r"\(196608 bytes\), file holds 65636 bytes"):
        convert(files, tmp_path / "out", ConvertOptions())


def test_unknowns_are_warned_and_local_xml_time_is_read_in_facility_zone(tmp_path):
    from converters.formats import mrc_xml

    text = _without_pixel_size(sample("Atlas_1.xml").read_text(encoding="utf-8"))
    text = text.replace("2023-06-02T15:03:39.1962747+02:00", "2023-06-02T15:03:39.1962747")  # no offset
    files = pair(tmp_path, "20241021_00405_final.mrc", text)
    stockholm = ZoneInfo("Europe/Stockholm")
    image = mrc_xml.read(files, ConvertOptions(timezone=stockholm))
    assert image.acquired == datetime(2023, 6, 2, 15, 3, 39, 196274, tzinfo=stockholm)
    assert image.pixel_size is None and image.warnings == ["pixel size unknown"]
    text = text.replace("<InstrumentModel>TALOS-12TAN18C</InstrumentModel>", "<InstrumentModel/>")
    text = text.replace("<acquisitionDateTime>2023-06-02T15:03:39.1962747</acquisitionDateTime>", "")
    image = mrc_xml.read(pair(tmp_path, "20241021_00405_final.mrc", text), ConvertOptions())
    assert image.warnings == ["acquisition date unknown", "microscope unknown", "pixel size unknown"]
