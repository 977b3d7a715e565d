"""The OME-TIFF writer (tiles, pyramid, BigTIFF, codecs, units) and OME-TIFF/CZI pass-through."""
from __future__ import annotations

import shutil
import struct
import subprocess
import warnings
from datetime import UTC, datetime

import mrcfile
import numpy as np
import pytest
import tifffile

from converters import ConversionError, ConvertOptions, PixelSize, convert, ometiff
from converters.base import SourceImage
from converters.planes import FuncPlane
from tests.helpers import sample


def big_mrc_pair(tmp_path, ny: int, nx: int, dtype="u2"):
    """A synthetic ny x nx MRC with the Atlas XML: large enough to need a pyramid."""
    data = (np.arange(ny * nx, dtype=np.uint64).reshape(ny, nx) % 65521).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.new(tmp_path / "Atlas_1.mrc") as m:
            m.set_data(data)
    shutil.copy(sample("Atlas_1.xml"), tmp_path / "Atlas_1.xml")
    return [tmp_path / "Atlas_1.mrc", tmp_path / "Atlas_1.xml"], data


def test_large_image_is_tiled_with_subifd_pyramid(tmp_path, check_output):
    files, data = big_mrc_pair(tmp_path, 2100, 3000)
    result = convert(files, tmp_path / "out", ConvertOptions())
    with tifffile.TiffFile(result.output) as tif:
        page = tif.pages.first
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (512, 512)
        assert page.compression == tifffile.COMPRESSION.ZSTD
        levels = tif.series[0].levels
        assert [lvl.shape for lvl in levels] == [(2100, 3000), (1050, 1500), (525, 750)]  # down to <= 1024 px
        assert np.array_equal(levels[0].asarray(), data)
        # level 1 is the 2x2 mean of level 0, rounded half up
        expected = np.floor(data.reshape(1050, 2, 1500, 2).mean(axis=(1, 3)) + 0.5).astype(data.dtype)
        assert np.array_equal(levels[1].asarray(), expected)
        assert not tif.is_bigtiff
    seen = check_output(result)
    assert seen.resolutions == 3


def test_one_byte_pixels_get_tiles_twice_as_wide_that_bio_formats_reads(tmp_path, bioformats_jar):
    """zstd would compress a 512x512 8-bit tile (256 KiB) with its slower small-input parameters: such
    images get 512x1024 tiles. Bio-Formats (what OMERO reads with) decodes every level as written."""
    data = np.random.default_rng(5).integers(0, 256, (1100, 2500), dtype=np.uint8)
    image = SourceImage(shape={"T": 1, "C": 1, "Z": 1, "Y": 1100, "X": 2500}, dtype=np.dtype(np.uint8),
                        planes=lambda: iter([FuncPlane((1100, 2500), np.uint8, lambda y0, y1: data[y0:y1])]),
                        channels=["SE"])
    out = tmp_path / "se.ome.tiff"
    ometiff.write(image, out, ConvertOptions(), None)
    with tifffile.TiffFile(out) as tif:
        page = tif.pages.first
        assert (page.tilelength, page.tilewidth) == (512, 1024) and page.compression == tifffile.COMPRESSION.ZSTD
    run = subprocess.run(["java", "-cp", str(bioformats_jar), "loci.formats.tools.ImageConverter", "-noflat",
                          "-no-upgrade", str(out), str(tmp_path / "bf.tif")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    level1 = np.floor(data.reshape(550, 2, 1250, 2).mean(axis=(1, 3)) + 0.5)  # 2x2 mean, half up
    with tifffile.TiffFile(tmp_path / "bf.tif") as seen:
        assert [p.shape for p in seen.pages] == [(1100, 2500), (550, 1250), (275, 625)]
        assert np.array_equal(seen.pages[0].asarray(), data)
        assert np.array_equal(seen.pages[1].asarray(), level1.astype(np.uint8))


def test_pyramid_halves_until_small(tmp_path):
    files, _ = big_mrc_pair(tmp_path, 300, 9000, "u1")
    result = convert(files, tmp_path / "out", ConvertOptions(compression="zlib"))
    with tifffile.TiffFile(result.output) as tif:
        assert [lvl.shape[1] for lvl in tif.series[0].levels] == [9000, 4500, 2250, 1125, 563]
        assert tif.pages.first.compression == tifffile.COMPRESSION.ADOBE_DEFLATE


def test_bigtiff_when_classic_offsets_would_overflow(tmp_path, monkeypatch):
    monkeypatch.setattr(ometiff, "BIGTIFF_ABOVE", 1000)
    files, data = big_mrc_pair(tmp_path, 64, 64)
    result = convert(files, tmp_path / "out", ConvertOptions(compression="none"))
    with tifffile.TiffFile(result.output) as tif:
        assert tif.is_bigtiff and tif.is_ome
        assert tif.pages.first.compression == tifffile.COMPRESSION.NONE
        assert np.array_equal(tif.asarray(), data)


def test_unknown_codec_is_refused(tmp_path):
    files, _ = big_mrc_pair(tmp_path, 16, 16)
    with pytest.raises(ConversionError, match="compression 'jpeg' is not one of"):
        convert(files, tmp_path / "out", ConvertOptions(compression="jpeg"))


def synthetic(unit: str, size: float) -> SourceImage:
    plane = FuncPlane((4, 4), np.dtype("u1"), lambda y0, y1: np.zeros((y1 - y0, 4), "u1"))
    return SourceImage(
        shape={"T": 1, "C": 1, "Z": 1, "Y": 4, "X": 4}, dtype=np.dtype("u1"), planes=lambda: iter([plane]),
        channels=["c"], pixel_size=PixelSize(size, size, unit), metadata={"Scale": "0.5 1/nm"},
        acquired=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


@pytest.mark.parametrize("unit", ["pm", "Å", "nm", "µm", "mm", "m"])
def test_every_ome_length_unit_validates(tmp_path, validate, unit):
    out = tmp_path / "u.ome.tiff"
    ometiff.write(synthetic(unit, 2.5), out, ConvertOptions(), "Scope")
    root = validate(out)
    pixels = root.find(".//{http://www.openmicroscopy.org/Schemas/OME/2016-06}Pixels")
    assert pixels.get("PhysicalSizeXUnit") == unit


def test_reciprocal_scale_stays_in_key_values(tmp_path):
    """A diffraction pattern's 1/nm scale is no length: pixel size unknown, the scale kept as a key-value."""
    from converters.meta import pixel_size, to_metres

    assert to_metres(0.5, "1/nm") is None and pixel_size(None) is None
    out = tmp_path / "d.ome.tiff"
    image = synthetic("nm", 1.0)
    image.pixel_size = None
    ometiff.write(image, out, ConvertOptions(), None)
    with tifffile.TiffFile(out) as tif:
        xml = tif.pages.first.description
    assert "PhysicalSizeX" not in xml and 'K="Scale">0.5 1/nm<' in xml


def test_ome_tiff_passes_through_untouched(tmp_path):
    converted = convert([sample("fei_example_tem_stack.emd")], tmp_path, ConvertOptions())
    before = converted.output.read_bytes()
    result = convert([converted.output], tmp_path / "again", ConvertOptions(microscope_names={"Titan": "Titan G2"}))
    assert result.status == "passthrough" and result.output == converted.output
    assert converted.output.read_bytes() == before
    assert not (tmp_path / "again").exists()
    assert result.microscope == "Titan G2"
    assert result.acquired == converted.acquired
    assert result.shape == converted.shape and result.channels == converted.channels
    assert result.pixel_size.x == pytest.approx(converted.pixel_size.x)
    assert result.metadata == converted.metadata


def test_tifffile_ome_tiff_without_instrument(tmp_path):
    path = tmp_path / "plain.ome.tif"
    tifffile.imwrite(path, np.zeros((3, 8, 8), "u1"), ome=True, metadata={"axes": "CYX", "Channel": {"Name": list("abc")}})
    result = convert([path], tmp_path / "out", ConvertOptions())
    assert result.status == "passthrough" and result.microscope is None and result.acquired is None
    assert result.shape == {"T": 1, "C": 3, "Z": 1, "Y": 8, "X": 8} and result.channels == ["a", "b", "c"]


CZI_XML = """<ImageDocument><Metadata><Information>
<Image><SizeX>640</SizeX><SizeY>480</SizeY><SizeC>2</SizeC><SizeZ>5</SizeZ>
<AcquisitionDateAndTime>2024-05-06T07:08:09.1234567Z</AcquisitionDateAndTime>
<Dimensions><Channels><Channel Id="Channel:0" Name="AF488"/><Channel Id="Channel:1" Name="DAPI"/></Channels></Dimensions>
</Image>
<Instrument><Microscopes><Microscope Id="Microscope:1" Name="Axio Observer"><System>Axio Observer.Z1 / 7</System></Microscope></Microscopes>
<Detectors><Detector Id="Detector:0" Name="Axiocam 712"/></Detectors></Instrument>
</Information>
<Scaling><Items><Distance Id="X"><Value>1.1e-07</Value></Distance><Distance Id="Y"><Value>1.1e-07</Value></Distance>
<Distance Id="Z"><Value>5e-07</Value></Distance></Items></Scaling></Metadata></ImageDocument>"""


def write_czi(path, xml: str = CZI_XML, metadata_position: int = 512):
    """A CZI file header and metadata segment as ZEN lays them out (no image subblocks: not needed here)."""
    header = b"ZISRAWFILE".ljust(16, b"\0") + struct.pack("<qq", 480, 480)
    body = struct.pack("<iiii", 1, 0, 0, 0) + b"\0" * 32 + struct.pack("<iqqiq", 0, 0, metadata_position, 0, 0)
    data = xml.encode("utf-8")
    segment = b"ZISRAWMETADATA".ljust(16, b"\0") + struct.pack("<qq", 256 + len(data), 256 + len(data))
    segment += struct.pack("<ii", len(data), 0).ljust(256, b"\0") + data
    path.write_bytes((header + body).ljust(metadata_position, b"\0") + segment)


def test_czi_passes_through_with_metadata(tmp_path):
    path = tmp_path / "cells.czi"
    write_czi(path)
    result = convert([path], tmp_path / "out", ConvertOptions(microscope_names={"Axio Observer.Z1 / 7": "Observer"}))
    assert result.status == "passthrough" and result.output == path
    assert result.microscope == "Observer"
    assert result.acquired == datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert result.shape == {"T": 1, "C": 2, "Z": 5, "Y": 480, "X": 640}
    assert result.channels == ["AF488", "DAPI"] and result.detector == "Axiocam 712"
    assert (result.pixel_size.x, result.pixel_size.unit, result.pixel_size.z) == (pytest.approx(110.0), "nm", 500.0)


@pytest.mark.parametrize("name, microscope, warnings", [
    ("Al2O3_SE_020_sp.czi", "Crossbeam 550", []),  # a FIB-SEM's CZI (SOURCES.md); Bio-Formats names no microscope
    ("DAPI_GFP.czi", None, ["acquisition date unknown", "microscope unknown", "pixel size unknown"]),
])
def test_real_czis_pass_through_as_bio_formats_reads_them(tmp_path, bioformats, name, microscope, warnings):
    path = sample(name)
    seen = bioformats(path)  # what OMERO will import
    result = convert([path], tmp_path / "out", ConvertOptions())
    assert result.status == "passthrough" and result.output == path
    assert result.shape == seen.sizes and len(result.channels) == seen.sizes["C"]
    if "X" in seen.physical:
        size, unit = seen.physical["X"]
        assert unit == "µm" and result.pixel_size.x * {"nm": 1e-3, "µm": 1}[result.pixel_size.unit] == pytest.approx(size)
    else:
        assert result.pixel_size is None
    acquired = result.acquired and result.acquired.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert acquired == (seen.date[:19] if seen.date else None)
    assert result.microscope == microscope and result.warnings == warnings


def test_czi_metadata_pointer_outside_file(tmp_path):
    path = tmp_path / "cut.czi"
    write_czi(path, metadata_position=512)
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(ConversionError, match=r"cut\.czi"):
        convert([path], tmp_path / "out", ConvertOptions())


@pytest.mark.parametrize("dtype", ["u1", "i2", "u4", "i4", "f4", "f8"])
def test_halving_is_the_2x2_mean_with_odd_edges_repeated(dtype):
    band = (np.arange(5 * 7).reshape(5, 7) * 3 - 40).astype(dtype) if dtype[0] != "u" else \
        (np.arange(5 * 7).reshape(5, 7) * 3).astype(dtype)
    padded = np.pad(band, ((0, 1), (0, 1)), mode="edge").astype(np.float64)
    mean = padded.reshape(3, 2, 4, 2).mean(axis=(1, 3))
    expected = mean if dtype[0] == "f" else np.floor(mean + 0.5)
    assert np.array_equal(ometiff._halve(band), expected.astype(dtype))


@pytest.mark.parametrize("dtype", ["u2", "i2", "u1"])
def test_halving_a_band_taller_than_one_block_near_the_type_limits(dtype):
    """A band is halved HALVE_ROWS rows at a time: the blocks meet without a seam, an odd last row and
    column repeat, and four values near the type's limits neither overflow nor lose the half."""
    info = np.iinfo(dtype)
    rows = 2 * ometiff.HALVE_ROWS + 3
    band = np.random.default_rng(1).integers(info.max - 3, info.max, (rows, 9), endpoint=True).astype(dtype)
    band[::5] = np.random.default_rng(2).integers(info.min, info.min + 4, band[::5].shape, endpoint=True)
    padded = np.pad(band.astype(np.float64), ((0, 1), (0, 1)), mode="edge")
    expected = np.floor(padded.reshape(padded.shape[0] // 2, 2, 5, 2).mean(axis=(1, 3)) + 0.5)
    assert np.array_equal(ometiff._halve(band), expected.astype(dtype))


def test_threaded_compression_writes_the_same_pixels(tmp_path):
    files, data = big_mrc_pair(tmp_path, 1100, 2300)
    result = convert(files, tmp_path / "out", ConvertOptions(workers=2))
    with tifffile.TiffFile(result.output) as tif:
        assert np.array_equal(tif.series[0].levels[0].asarray(), data)
        assert len(tif.series[0].levels) == 3


def test_progress_rises_to_one_as_planes_and_levels_are_written(tmp_path):
    files, _ = big_mrc_pair(tmp_path, 2100, 3000)
    told = []
    convert(files, tmp_path / "out", ConvertOptions(progress=told.append))
    assert len(told) > 10 and told == sorted(told) and told[0] < 0.1 and told[-1] == 1.0


def test_an_error_while_reading_a_band_stops_the_writer_and_leaves_no_file(tmp_path):
    def rows(y0, y1):
        if y0 >= 1024:
            raise ConversionError("the detector's file ends early")
        return np.zeros((y1 - y0, 3000), np.uint16)

    image = SourceImage(shape={"T": 1, "C": 1, "Z": 1, "Y": 2100, "X": 3000}, dtype=np.dtype(np.uint16),
                        planes=lambda: iter([FuncPlane((2100, 3000), np.uint16, rows)]), channels=["HAADF"])
    out = tmp_path / "broken.ome.tif"
    with pytest.raises(ConversionError, match="ends early"):
        ometiff.write(image, out, ConvertOptions(workers=3), None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("yielded", [1, 3])
def test_a_file_yielding_other_than_its_header_s_plane_count_fails_and_leaves_no_file(tmp_path, yielded):
    plane = FuncPlane((40, 30), np.uint16, lambda y0, y1: np.zeros((y1 - y0, 30), np.uint16))
    image = SourceImage(shape={"T": 2, "C": 1, "Z": 1, "Y": 40, "X": 30}, dtype=np.dtype(np.uint16),
                        planes=lambda: iter([plane] * yielded), channels=["HAADF"])
    with pytest.raises(ConversionError, match=rf"^the file yields {yielded} planes, its header says 2$"):
        ometiff.write(image, tmp_path / "stack.ome.tif", ConvertOptions(), None)
    assert list(tmp_path.iterdir()) == []
