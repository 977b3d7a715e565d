"""Any TIFF: vendor calibrations checked against RosettaSciIO and the raw tags, every series kept,
pixels equal to tifffile's, and no pixel size where the file has no spatial calibration."""
from __future__ import annotations

import math
import warnings
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import tifffile

from converters import ConversionError, ConvertOptions, convert, group_files, registry
from converters.formats.tiff import UNKNOWN_WRITER
from converters.meta import to_metres
from tests.helpers import sample

STOCKHOLM = ZoneInfo("Europe/Stockholm")


def rsciio_axes(path) -> dict[str, dict]:
    """RosettaSciIO's axes by name ("width", "height", ...), read eagerly (its lazy read leaves the file open)."""
    from rsciio.tiff import file_reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the streak file warns about its non-linear axis
        return {axis["name"]: axis for axis in file_reader(str(path))[0]["axes"]}


def metres(size, axis: str) -> float:
    return to_metres(getattr(size, axis), size.unit)


def written(result) -> list[np.ndarray]:
    return [tifffile.imread(image.path) for image in result.images]


@pytest.mark.parametrize("name", ["JEOL-SightX-TEM-mag-dummy.tif", "test_loading_image_saved_with_imageJ_stack.tif",
                                  "test_loading_image_saved_with_DM_stack.tif"])
def test_a_vendor_calibration_is_the_one_rosettasciio_reads(tmp_path, name, check_output):
    path = sample(name)
    result = convert([path], tmp_path, ConvertOptions())
    check_output(result)  # valid OME-XML, and Bio-Formats (OMERO's reader) sees the same
    axes = rsciio_axes(path)
    for ours, theirs in (("x", "width"), ("y", "height")):
        expected = to_metres(axes[theirs]["scale"], axes[theirs]["units"])
        assert metres(result.pixel_size, ours) == pytest.approx(expected, rel=1e-6)
    assert registry.identify(path).NAME == "TIFF"
    with tifffile.TiffFile(path) as tif:
        assert np.array_equal(written(result)[0].squeeze(), tif.asarray().squeeze())


def test_the_dm_export_s_x_and_y_are_its_raw_tags(tmp_path):
    """SOURCES.md doubted it: x is tag 65009 (0.1687 µm), y is 65010 (1.687 µm), as DigitalMicrograph and
    RosettaSciIO's writer order them; the stack's third axis (65011, in s) is time."""
    path = sample("test_loading_image_saved_with_DM_stack.tif")
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages.first.tags
        x, y, t = tags[65009].value, tags[65010].value, tags[65011].value
        assert (tags[65003].value, tags[65004].value, tags[65005].value) == ("µm", "µm", "s")
    result = convert([path], tmp_path, ConvertOptions())
    assert metres(result.pixel_size, "x") == pytest.approx(x * 1e-6) and metres(result.pixel_size, "y") == pytest.approx(y * 1e-6)
    assert result.shape == {"T": 2, "C": 1, "Z": 1, "Y": 68, "X": 68}
    assert f"{t:g}" == "2.5"
    assert "pixel size unknown" not in result.warnings and "acquisition date unknown" in result.warnings


def test_jeol_sightx_date_and_microscope_from_its_xml_and_tags(tmp_path):
    path = sample("JEOL-SightX-TEM-mag-dummy.tif")
    result = convert([path], tmp_path, ConvertOptions())
    with tifffile.TiffFile(path) as tif:
        assert result.microscope == tif.pages.first.tags[272].value  # Model: JEM-ARM200F
    # rsciio: date 2019-11-27, time 16:11:26.620540, zone +09:00
    assert result.acquired == datetime(2019, 11, 27, 16, 11, 26, 620540, tzinfo=timezone(timedelta(hours=9)))
    assert result.warnings == []


@pytest.mark.parametrize("name", ["test_loading_image_saved_with_imageJ_no_scale.tif", "test_hamamatsu_streak_SCAN.tif"])
def test_no_spatial_calibration_no_pixel_size(tmp_path, name):
    path = sample(name)
    result = convert([path], tmp_path, ConvertOptions())
    assert result.pixel_size is None and "pixel size unknown" in result.warnings
    assert all(not k.startswith("Calibration") for k in result.metadata)


def test_the_streak_image_s_axes_are_time_and_wavelength_not_length(tmp_path):
    path = sample("test_hamamatsu_streak_SCAN.tif")
    axes = rsciio_axes(path)
    assert (axes["height"]["units"], axes["width"]["units"]) == ("ps", "nm")  # nm of wavelength: not a pixel
    result = convert([path], tmp_path, ConvertOptions(timezone=STOCKHOLM))
    assert result.pixel_size is None and result.acquired == datetime(2022, 2, 9, 18, 39, 41, tzinfo=STOCKHOLM)


def test_the_imagej_stack_is_z(tmp_path):
    path = sample("test_loading_image_saved_with_imageJ_stack.tif")
    with tifffile.TiffFile(path) as tif:
        assert tif.imagej_metadata["slices"] == 2
    result = convert([path], tmp_path, ConvertOptions())
    assert result.shape == {"T": 1, "C": 1, "Z": 2, "Y": 68, "X": 68}


@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_a_plain_rgb_tiff_at_72_dpi_imports_with_what_is_unknown(tmp_path, planar, check_output):
    rgb = np.random.default_rng(1).integers(0, 255, (40, 30, 3), np.uint8)
    path = tmp_path / "photo.tif"
    stored = rgb if planar == "contig" else np.moveaxis(rgb, -1, 0)
    tifffile.imwrite(path, stored, photometric="rgb", planarconfig=planar, resolution=(72, 72),
                     resolutionunit="INCH", compression="zlib", rowsperstrip=7)
    result = convert([path], tmp_path / "out", ConvertOptions())
    check_output(result)
    assert result.pixel_size is None and result.channels == ["red", "green", "blue"]
    assert result.warnings[0] == UNKNOWN_WRITER
    assert {"acquisition date unknown", "microscope unknown", "pixel size unknown"} <= set(result.warnings)
    assert np.array_equal(np.moveaxis(written(result)[0], 0, -1), rgb)


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_uncompressed_strips_are_read_in_either_byte_order(tmp_path, byteorder):
    data = np.random.default_rng(2).integers(0, 60000, (2, 45, 33), np.uint16)
    path = tmp_path / "raw.tif"
    tifffile.imwrite(path, data, byteorder=byteorder, rowsperstrip=7, photometric="minisblack")
    result = convert([path], tmp_path / "out", ConvertOptions())
    assert np.array_equal(written(result)[0].reshape(data.shape), data)


def test_every_page_of_a_multipage_tiff_is_an_image_or_accounted(tmp_path):
    data = np.arange(3 * 50 * 60, dtype=np.uint16).reshape(3, 50, 60)
    thumb = np.full((10, 12), 9, np.uint8)
    path = tmp_path / "multi.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(thumb, subfiletype=1)  # an overview written first
        tif.write(data, tile=(16, 16), compression="lzw", photometric="minisblack")
    result = convert([path], tmp_path / "out", ConvertOptions())
    images = written(result)
    assert len(images) == 2 and np.array_equal(images[0].reshape(data.shape), data)  # the data first
    assert np.array_equal(images[1].squeeze(), thumb)
    assert result.images[1].title == "series 1 (thumbnail)"
    assert result.shape["T"] * result.shape["Z"] == 3
    assert {a.went for a in result.accounted} == {"image"} and len(result.accounted) == 2


def xml_tag(code: int, text: str):
    return [(code, "s", 0, text, True)]


def test_fibics_pixel_is_the_length_of_the_scan_vector(tmp_path):
    xml = ("<?xml version='1.0'?><Fibics version='1.0'><Image><Machine>Crossbeam 550</Machine>"
           "<Detector>SESI</Detector></Image><Scan><Ux>0.003</Ux><Uy>0.004</Uy><Vx>-0.004</Vx><Vy>0.003</Vy>"
           "<Dwell>1</Dwell></Scan></Fibics>")
    path = tmp_path / "atlas.tif"
    tifffile.imwrite(path, np.zeros((8, 9), np.uint16), extratags=xml_tag(51023, xml))
    result = convert([path], tmp_path / "out", ConvertOptions())
    assert metres(result.pixel_size, "x") == pytest.approx(math.hypot(0.003, 0.004) * 1e-6)  # 5 nm
    assert (result.microscope, result.detector) == ("Crossbeam 550", "SESI")
    assert result.metadata["Scan.Dwell"] == "1"


TESCAN_INI = ("[MAIN]\r\nDate=2021-03-04\r\nTime=10:11:12\r\nDevice=MIRA3 LMH\r\nPixelSizeX=2.5e-09\r\n"
              "PixelSizeY=2.5e-09\r\n[SEM]\r\nHV=15000\r\n")


def test_tescan_from_its_tag(tmp_path):
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, np.zeros((8, 9), np.uint8), extratags=xml_tag(50431, TESCAN_INI))
    result = convert([path], tmp_path / "out", ConvertOptions(timezone=STOCKHOLM))
    assert metres(result.pixel_size, "x") == pytest.approx(2.5e-9)
    assert (result.microscope, result.acquired) == ("MIRA3 LMH", datetime(2021, 3, 4, 10, 11, 12, tzinfo=STOCKHOLM))
    assert result.metadata["SEM.HV"] == "15000" and result.warnings == []


def test_tescan_from_its_hdr_sidecar_grouped_by_name(tmp_path):
    (tmp_path / "t.tif").write_bytes(b"")
    tifffile.imwrite(tmp_path / "t.tif", np.zeros((8, 9), np.uint8))
    (tmp_path / "t.hdr").write_text(TESCAN_INI)
    [group] = group_files(["t.tif", "t.hdr"])
    assert group.files == ["t.tif", "t.hdr"] and group.error is None
    result = convert([tmp_path / f for f in group.files], tmp_path / "out", ConvertOptions())
    assert metres(result.pixel_size, "x") == pytest.approx(2.5e-9) and result.microscope == "MIRA3 LMH"


def test_jeol_sem_txt_sidecar(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((480, 640), np.uint8))
    (tmp_path / "s.txt").write_text("$CM_FORMAT JEOL/SEM\n$CM_INSTRUMENT JSM-7800F\n$CM_DATE 2022/05/06\n"
                                    "$CM_TIME 14:15:16\n$CM_FULL_SIZE 1280 960\n$$SM_MICRON_BAR 200\n"
                                    "$$SM_MICRON_MARKER 1um\n$CM_SIGNAL SEI\n")
    result = convert([tmp_path / "s.tif", tmp_path / "s.txt"], tmp_path / "out", ConvertOptions(timezone=STOCKHOLM))
    # 1 µm over 200 pixels of the 1280-wide frame; the TIFF is 640 wide: 10 nm per pixel
    assert metres(result.pixel_size, "x") == pytest.approx(1e-6 / 200 * 1280 / 640)
    assert (result.microscope, result.detector) == ("JSM-7800F", "SEI")
    assert result.acquired == datetime(2022, 5, 6, 14, 15, 16, tzinfo=STOCKHOLM)


def test_hitachi_sem_txt_sidecar(tmp_path):
    tifffile.imwrite(tmp_path / "h.tif", np.zeros((8, 9), np.uint8))
    (tmp_path / "h.txt").write_text("[SemImageFile]\nInstructName=TM4000\nDate=2023/01/02\nTime=03:04:05\n"
                                    "PixelSize=49.6032\nDataSize=1280x960\n")
    result = convert([tmp_path / "h.tif", tmp_path / "h.txt"], tmp_path / "out", ConvertOptions())
    assert metres(result.pixel_size, "x") == pytest.approx(49.6032e-9) and result.microscope == "TM4000"


def test_the_sem_sidecar_is_optional_and_an_unknown_txt_is_said_not_read(tmp_path):
    assert [g.files for g in group_files(["a.tif", "b.tif", "b.txt"])] == [["a.tif"], ["b.tif", "b.txt"]]
    tifffile.imwrite(tmp_path / "b.tif", np.zeros((8, 9), np.uint8))
    (tmp_path / "b.txt").write_text("shopping list\n")
    result = convert([tmp_path / "b.tif", tmp_path / "b.txt"], tmp_path / "out", ConvertOptions())
    assert any("not a JEOL or Hitachi SEM metadata file" in n for n in result.notes)


def test_the_sem_plugins_keep_their_priority():
    assert registry.identify(sample("FEI-Helios-Ebeam-8bits.tif")).NAME == "Thermo Fisher/FEI SEM TIFF"
    assert registry.identify(sample("sample6_001.tif")).NAME == "Zeiss SEM TIFF"


@pytest.mark.parametrize("cut, message", [
    (5, r"^cut\.tif is truncated or damaged: its TIFF structure cannot be read \(.*\); the file holds 5 bytes$"),
    (8, r"^cut\.tif is truncated: its first image directory is at byte 8, the file holds 8 bytes$"),
    (5000, r"^cut\.tif is truncated: its pixels need bytes \d+-\d+, the file ends at byte 5000$"),
])
def test_a_truncated_tiff_says_so(tmp_path, cut, message):
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, np.zeros((300, 400), np.uint8))
    (tmp_path / "cut.tif").write_bytes(full.read_bytes()[:cut])
    with pytest.raises(ConversionError, match=message):
        convert([tmp_path / "cut.tif"], tmp_path / "out", ConvertOptions())


@pytest.mark.parametrize("name, share", [("test_loading_image_saved_with_DM_stack.tif", 0.5),
                                         ("test_loading_image_saved_with_DM_stack.tif", 0.9),
                                         ("test_loading_image_saved_with_imageJ_stack.tif", 0.9)])
def test_a_stack_cut_before_its_second_directory_imports_its_first_frame_flagged(tmp_path, name, share):
    """Converted before as one frame of its two without a word: tifffile ends a chain of directories
    that runs past the end of the file with only an error in its log. A copy cut there looks the same
    as a valid file whose writer left a stray pointer, so what is readable is imported, flagged."""
    data = sample(name).read_bytes()
    with tifffile.TiffFile(sample(name)) as tif:
        second, first_frame = tif.pages[1].offset, tif.pages[0].asarray()
    keep = int(len(data) * share)
    assert keep < second
    (tmp_path / "cut.tif").write_bytes(data[:keep])
    done = convert([tmp_path / "cut.tif"], tmp_path / "out", ConvertOptions())
    assert (f"the file may be cut short: its image directory 2 would lie past its end (byte {keep}); what its "
            "first 1 hold was read") in done.warnings
    with tifffile.TiffFile(done.output) as out:
        assert len(out.series[0].pages) == 1
        np.testing.assert_array_equal(out.series[0].asarray(), first_frame)


def test_a_stack_cut_inside_its_last_directory_says_so(tmp_path):
    """Was the registry's "could not be read: TiffFileError: corrupted IFD structure"."""
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, np.zeros((3, 16, 16), np.uint8), photometric="minisblack", metadata=None)
    with tifffile.TiffFile(full) as tif:
        last = tif.pages[2].offset
    (tmp_path / "cut.tif").write_bytes(full.read_bytes()[:last + 6])  # its tag count and half a tag
    with pytest.raises(ConversionError, match=rf"^cut\.tif is truncated: its image directory 3 at byte {last} runs "
                                              rf"past the end of the {last + 6} bytes the file holds"):
        convert([tmp_path / "cut.tif"], tmp_path / "out", ConvertOptions())


def test_a_damaged_vendor_block_imports_the_pixels_with_a_warning(tmp_path):
    path = tmp_path / "atlas.tif"
    tifffile.imwrite(path, np.ones((8, 9), np.uint16), extratags=xml_tag(51023, "<Fibics><Scan><Ux>0.1"))
    result = convert([path], tmp_path / "out", ConvertOptions())
    assert result.pixel_size is None and np.array_equal(written(result)[0], np.ones((8, 9), np.uint16))
    assert any(w.startswith("its vendor metadata could not be read (ValueError: atlas.tif: the Fibics XML")
               for w in result.warnings)
