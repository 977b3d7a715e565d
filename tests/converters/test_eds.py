"""EDS and other spectra: Bruker .bcf/.spx, EDAX .spc and .spd maps, EMSA/MSA. Values checked against RosettaSciIO's
own output (a whole, non-lazy read) and the files' own text, never against what we wrote."""
from __future__ import annotations

import shutil
import warnings
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import tifffile
from rsciio.edax import file_reader

from converters import ConversionError, ConvertOptions, convert, group_files
from tests.converters.test_velox_emd import read_csv
from tests.helpers import sample

STOCKHOLM = ZoneInfo("Europe/Stockholm")


def reference(module: str, name: str, **options) -> list[dict]:
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(f"rsciio.{module}").file_reader(str(sample(name)), **options)


def attachment(result, kind: str):
    [found] = [a.path for a in result.attachments if a.kind == kind]
    return found


def local(general: dict) -> datetime:
    return datetime.fromisoformat(f"{general['date']}T{general['time']}").replace(tzinfo=STOCKHOLM)


@pytest.mark.parametrize("name, shapes", [
    ("16x16_12bit_packed_8bit.bcf", [(16, 16)]),
    ("bcf_v2_50x50px.bcf", [(50, 50), (825, 1100)]),  # two images of different shapes: two OMERO images
])
def test_bcf_images_and_the_sum_of_its_spectrum_image(tmp_path, check_output, name, shapes):
    result = convert([sample(name)], tmp_path, ConvertOptions(timezone=STOCKHOLM))
    images = reference("bruker", name, select_type="image")
    [cube] = reference("bruker", name, select_type="spectrum_image")  # whole, in memory: the reference
    assert [image.shape["Y"] * 10**6 + image.shape["X"] for image in result.images] == \
        [y * 10**6 + x for y, x in shapes]
    for ours, ref in zip(result.images, images):
        assert np.array_equal(tifffile.imread(ours.path), ref["data"])
        height, width = ref["axes"]
        assert ours.pixel_size.unit == "nm"
        assert ours.pixel_size.x == pytest.approx(width["scale"] * 1000) and width["units"] == "µm"
        assert ours.pixel_size.y == pytest.approx(height["scale"] * 1000)
    assert result.acquired == local(cube["metadata"]["General"])  # Esprit's wall clock, in the facility's zone
    label, table = read_csv(attachment(result, "spectrum-csv"))
    energy = cube["axes"][-1]
    assert label == "energy (keV)" and len(table) == energy["size"] == 2048
    assert table[:, 0] == pytest.approx(energy["offset"] + energy["scale"] * np.arange(energy["size"]))
    assert np.array_equal(table[:, 1], cube["data"].sum(axis=(0, 1), dtype=np.int64))
    assert result.warnings == ["microscope unknown"]  # Esprit does not name the SEM
    assert result.detector == cube["original_metadata"]["Detector"]["Type"]
    assert any(a.went == "attachment" and a.source.startswith("spectrum image") for a in result.accounted)
    check_output(result)


@pytest.mark.parametrize("module, name, channels, unit", [
    ("bruker", "extracted_from_bcf.spx", 1548, "keV"),
    ("msa", "647_leo_edax_test.msa", 4096, "eV"),  # "#XUNITS: Energy (EV)"
    ("edax", "647_leo_edax_test.spc", 4096, "keV"),
])
def test_a_file_of_one_spectrum_imports_its_plot(tmp_path, check_output, module, name, channels, unit):
    result = convert([sample(name)], tmp_path, ConvertOptions(timezone=STOCKHOLM))
    [ref] = reference(module, name)
    assert result.channels == ["red", "green", "blue"] and result.shape["C"] == 3  # the plot is the image
    label, table = read_csv(attachment(result, "spectrum-csv"))
    energy = ref["axes"][-1]
    assert label == f"energy ({unit})" and len(table) == energy["size"] == channels
    assert table[:, 0] == pytest.approx(float(energy["offset"]) + float(energy["scale"]) * np.arange(channels))
    assert np.array_equal(table[:, 1], np.asarray(ref["data"], dtype=np.float64))
    assert "pixel size unknown" not in result.warnings and "acquisition date unknown" not in result.warnings
    check_output(result)


def test_spectrum_dates_come_from_the_files(tmp_path):
    spx = convert([sample("extracted_from_bcf.spx")], tmp_path / "spx", ConvertOptions(timezone=STOCKHOLM))
    assert spx.acquired == local(reference("bruker", "extracted_from_bcf.spx")[0]["metadata"]["General"])
    msa = convert([sample("647_leo_edax_test.msa")], tmp_path / "msa", ConvertOptions(timezone=STOCKHOLM))
    text = sample("647_leo_edax_test.msa").read_text(encoding="latin-1")
    assert "#DATE        : 29-Aug-2022" in text and "#TIME        : 10:14" in text
    assert msa.acquired == datetime(2022, 8, 29, 10, 14, tzinfo=STOCKHOLM)
    # the .spc of the same acquisition: its binary header's collection time, read by rsciio
    spc = convert([sample("647_leo_edax_test.spc")], tmp_path / "spc", ConvertOptions(timezone=STOCKHOLM))
    header = reference("edax", "647_leo_edax_test.spc", load_all_spc=True)[0]["original_metadata"]["spc_header"]
    assert spc.acquired == datetime(int(header["collectDateYear"]), int(header["collectDateMon"]),
                                    int(header["collectDateDay"]), int(header["collectTimeHour"]),
                                    int(header["collectTimeMin"]), int(header["collectTimeSec"]), tzinfo=STOCKHOLM)
    assert spc.acquired.replace(second=0) == msa.acquired
    assert msa.metadata["EDAX Detector"] == "Octane Elite 25"


def test_twenty_byte_bcf_is_named_truncated(tmp_path):
    path = tmp_path / "map.bcf"
    path.write_bytes(sample("16x16_12bit_packed_8bit.bcf").read_bytes()[:20])
    with pytest.raises(ConversionError, match=r"^map\.bcf is truncated: a Bruker \.bcf holds at least"):
        convert([path], tmp_path / "out", ConvertOptions())


@pytest.mark.parametrize("name", ["16x16_12bit_packed_8bit.bcf", "bcf_v2_50x50px.bcf"])
@pytest.mark.parametrize("share", [0.03, 0.5, 0.999])
def test_cut_bcf_is_named_truncated_with_the_size_its_container_declares(tmp_path, name, share):
    """Was "not a readable Bruker .bcf file (error: unpack requires a buffer...)", or, cut past its images,
    converted without a word about the spectrum image it lost."""
    data = sample(name).read_bytes()
    keep = int(len(data) * share)
    (tmp_path / "map.bcf").write_bytes(data[:keep])
    with pytest.raises(ConversionError) as refused:
        convert([tmp_path / "map.bcf"], tmp_path / "out", ConvertOptions())
    assert str(refused.value) == f"map.bcf is truncated: its header says {len(data)} bytes, the file holds {keep} (an interrupted copy?)"


def test_bcf_with_a_block_zeroed_says_a_block_does_not_inflate(tmp_path):
    """A zlib.error escaped convert() (the pipeline's "internal error")."""
    data = bytearray(sample("bcf_v2_50x50px.bcf").read_bytes())
    middle, block = len(data) // 2, len(data) // 8
    data[middle - block // 2:middle + block // 2] = bytes(block // 2 * 2)
    (tmp_path / "map.bcf").write_bytes(bytes(data))
    with pytest.raises(ConversionError, match=r"^map\.bcf: a compressed block in it does not inflate \(Error -\d+ while "
                                              r"decompressing data.*\); the file is damaged$"):
        convert([tmp_path / "map.bcf"], tmp_path / "out", ConvertOptions())


@pytest.mark.parametrize("keep", [1024, 6456, 11620])
def test_cut_spx_is_named_truncated(tmp_path, keep):
    """Was the registry's "could not be read: ParseError: unclosed token" """
    (tmp_path / "spot.spx").write_bytes(sample("extracted_from_bcf.spx").read_bytes()[:keep])
    with pytest.raises(ConversionError) as refused:
        convert([tmp_path / "spot.spx"], tmp_path / "out", ConvertOptions())
    assert str(refused.value) == f"spot.spx is truncated: its XML ends before </TRTSpectrum> (the file holds {keep} bytes)"


def test_spx_with_a_damaged_tag_is_named_invalid_xml(tmp_path):
    data = sample("extracted_from_bcf.spx").read_bytes()
    at = data.index(b"<ClassInstance")
    (tmp_path / "spot.spx").write_bytes(data[:at + 1] + b"\xff" + data[at + 2:])
    with pytest.raises(ConversionError, match=r"^spot\.spx is not valid XML \(mismatched tag: line \d+, column \d+\)$"):
        convert([tmp_path / "spot.spx"], tmp_path / "out", ConvertOptions())


def test_truncated_spc_names_what_the_header_says(tmp_path):
    path = tmp_path / "spot.spc"
    path.write_bytes(sample("647_leo_edax_test.spc").read_bytes()[:5000])
    with pytest.raises(ConversionError, match=r"^spot\.spc is truncated: its header says 4096 channels from byte "
                                              r"3840 \(20224 bytes\), the file holds 5000"):
        convert([path], tmp_path / "out", ConvertOptions())


def test_msa_with_an_unreadable_body_names_the_file(tmp_path):
    path = tmp_path / "spot.msa"
    head = sample("647_leo_edax_test.msa").read_bytes()[:1200]  # cut in the data, then a line of text
    path.write_bytes(head[: head.rindex(b"\n") + 1] + b"10.0, abc\n#ENDOFDATA   :\n")
    with pytest.raises(ConversionError, match=r"^spot\.msa is not a readable EMSA/MSA file"):
        convert([path], tmp_path / "out", ConvertOptions())


def _msa_rows(data: bytes) -> list[bytes]:
    """The data rows of the sample (XY pairs), read from its text."""
    body = data[data.index(b"#SPECTRUM"):].split(b"\n")[1:]
    return [row for row in body if row.strip() and not row.startswith(b"#")]


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_cut_msa_is_named_truncated_with_its_npoints(tmp_path, share):
    """Was "not a readable EMSA/MSA file (IndexError: list index out of range)"; cut within its first
    rows, it converted as a shorter spectrum."""
    data = sample("647_leo_edax_test.msa").read_bytes()
    cut = data[:int(len(data) * share)]
    (tmp_path / "spot.msa").write_bytes(cut)
    with pytest.raises(ConversionError) as refused:
        convert([tmp_path / "spot.msa"], tmp_path / "out", ConvertOptions())
    assert str(refused.value) == (f"spot.msa is truncated: its #NPOINTS says {len(_msa_rows(data))} channels, the file "
                                  f"holds {len(_msa_rows(cut))} and ends without #ENDOFDATA")


def test_msa_cut_in_its_header_is_named_truncated(tmp_path):
    """Converted before, as a spectrum of no channels."""
    (tmp_path / "spot.msa").write_bytes(sample("647_leo_edax_test.msa").read_bytes()[:64])
    with pytest.raises(ConversionError, match=r"^spot\.msa is truncated: it ends without #ENDOFDATA, before any of its "
                                              r"data \(the file holds 64 bytes\)$"):
        convert([tmp_path / "spot.msa"], tmp_path / "out", ConvertOptions())


def test_msa_with_rows_zeroed_says_how_many_channels_it_lost(tmp_path):
    """An eighth of the file zeroed in its middle (as a failing disk leaves it): RosettaSciIO dropped the
    rows it could not parse, and the spectrum imported short, its later peaks at the wrong energies."""
    data = sample("647_leo_edax_test.msa").read_bytes()
    rows = _msa_rows(data)
    start, end = len(data) // 2 - len(data) // 16, len(data) // 2 + len(data) // 16
    (tmp_path / "spot.msa").write_bytes(data[:start] + bytes(end - start) + data[end:])
    with pytest.raises(ConversionError) as refused:
        convert([tmp_path / "spot.msa"], tmp_path / "out", ConvertOptions())
    assert str(refused.value).startswith(f"spot.msa is damaged: its #NPOINTS says {len(rows)} channels, ")


def test_emsa_suffix_is_read(tmp_path):
    shutil.copy(sample("647_leo_edax_test.msa"), tmp_path / "spot.emsa")
    assert convert([tmp_path / "spot.emsa"], tmp_path / "out", ConvertOptions()).status == "converted"


def edax_map(folder, lines=5, points=7, channels=1024, count_type="<u2", ipr=True, seed=0) -> dict[str, object]:
    """An EDAX spectrum image as TEAM writes it, laid out as rsciio.edax parses it (its own header types):
    <stem>.spd (a 1068-byte header, then lines x points x channels counts), the real sample .spc renamed
    to <stem>.spc (energy calibration and date) and <stem>_Img.ipr (microns per pixel). Returns the paths."""
    from rsciio.edax._api import get_ipr_dtype_list, get_spd_dtype_list

    folder.mkdir(parents=True, exist_ok=True)
    counts = np.random.default_rng(seed).integers(0, 50, (lines, points, channels)).astype(count_type)
    header = np.zeros(1, get_spd_dtype_list())
    header["tag"] = np.frombuffer(b"MAPSPECTRA_DATA\x00", np.int8)
    header["fName"][0][:11] = np.frombuffer(b"map_Img.bmp", np.int8)
    header["version"], header["nSpectra"], header["nPoints"], header["nLines"] = 1, lines * points, points, lines
    header["nChannels"], header["countBytes"], header["dataOffset"] = channels, counts.itemsize, header.itemsize
    spd = folder / "map.spd"
    spd.write_bytes(header.tobytes() + counts.tobytes())
    spc = folder / "map.spc"
    spc.write_bytes(sample("647_leo_edax_test.spc").read_bytes())
    paths = {"spd": spd, "spc": spc, "counts": counts}
    if ipr:
        description = np.zeros(1, get_ipr_dtype_list(version=334))
        description["version"], description["imageType"], description["mppX"], description["mppY"] = 334, 2, 0.25, 0.4
        paths["ipr"] = folder / "map_Img.ipr"
        paths["ipr"].write_bytes(description.tobytes())
    return paths


def test_an_edax_map_becomes_its_image_of_counts_and_its_sum_spectrum(tmp_path, check_output):
    made = edax_map(tmp_path / "in")
    [group] = group_files(sorted(p.name for p in (tmp_path / "in").iterdir()))
    assert (group.files, group.kind, group.error) == (["map.spd", "map.spc", "map_Img.ipr"], "edax_map", None)
    result = convert([tmp_path / "in" / f for f in group.files], tmp_path / "out", ConvertOptions(timezone=STOCKHOLM))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        [ref] = file_reader(str(made["spd"]), load_all_spc=True)  # whole, in memory: finds its .spc and (by its header) .ipr
    assert ref["data"].shape == (5, 7, 1024) and np.array_equal(ref["data"], made["counts"])
    [image] = result.images
    assert np.array_equal(tifffile.imread(image.path), ref["data"].sum(axis=2))
    height, width, energy = ref["axes"]
    assert (width["units"], width["scale"], height["scale"]) == ("µm", pytest.approx(0.25), pytest.approx(0.4))
    assert (image.pixel_size.x, image.pixel_size.y, image.pixel_size.unit) == (
        pytest.approx(250.0), pytest.approx(400.0), "nm")
    label, table = read_csv(attachment(result, "spectrum-csv"))
    assert label == "energy (keV)" and len(table) == energy["size"] == 1024
    assert table[:, 0] == pytest.approx(energy["offset"] + energy["scale"] * np.arange(1024))
    assert np.array_equal(table[:, 1], ref["data"].sum(axis=(0, 1), dtype=np.int64))
    header = ref["original_metadata"]["spc_header"]  # the map's date is its .spc's
    assert result.acquired == datetime(int(header["collectDateYear"]), int(header["collectDateMon"]),
                                       int(header["collectDateDay"]), int(header["collectTimeHour"]),
                                       int(header["collectTimeMin"]), int(header["collectTimeSec"]), tzinfo=STOCKHOLM)
    assert result.warnings == ["microscope unknown"]  # EDAX does not name the SEM
    assert [a.went for a in result.accounted] == ["image", "attachment"]
    check_output(result)


def test_an_edax_map_without_its_ipr_has_no_pixel_size_and_wide_counts_stay_exact(tmp_path):
    made = edax_map(tmp_path / "in", lines=3, points=4, channels=64, count_type="<u4", ipr=False)
    made["counts"][0, 0, :] = 2**31  # 64 channels of 2^31: past uint32 at one pixel
    made["spd"].write_bytes(made["spd"].read_bytes()[:1068] + made["counts"].tobytes())
    (tmp_path / "in" / "other_Img.ipr").write_bytes(b"\x00" * 264)  # not this map's: never read
    result = convert([made["spd"], made["spc"]], tmp_path / "out", ConvertOptions())
    [image] = result.images
    assert image.pixel_size is None and "pixel size unknown" in result.warnings
    stored = tifffile.imread(image.path)
    assert stored.dtype == np.float64 and stored[0, 0] == 64 * 2**31
    assert np.array_equal(stored, made["counts"].sum(axis=2, dtype=np.uint64).astype(np.float64))


def test_a_lone_spc_is_a_spectrum_and_a_lone_spd_names_its_missing_spc(tmp_path):
    groups = group_files(sorted(["run/map.spd", "run/map.spc", "run/spot.spc", "run/alone.spd", "run/alone_Img.ipr"]))
    assert [(g.files, g.kind, g.error) for g in groups] == [
        (["run/alone.spd", "run/alone_Img.ipr"], "edax_map", "alone.spd needs its .spc file alone.spc beside it"),
        (["run/map.spd", "run/map.spc"], "edax_map", None),
        (["run/spot.spc"], "single", None),
    ]
    made = edax_map(tmp_path / "in")
    with pytest.raises(ConversionError, match=r"^map\.spd needs its map\.spc in the same upload"):
        convert([made["spd"]], tmp_path / "out", ConvertOptions())


@pytest.mark.parametrize("cut, message", [
    (20, r"^map\.spd is truncated: an EDAX \.spd header is 1068 bytes, the file holds 20$"),
    (1068 + 1000, r"^map\.spd is truncated: its header says 7x5 points of 1024 channels from byte 1068 \(72748 "
                  r"bytes\), the file holds 2068$"),
])
def test_a_short_spd_is_refused_by_name(tmp_path, cut, message):
    made = edax_map(tmp_path / "in")
    made["spd"].write_bytes(made["spd"].read_bytes()[:cut])
    with pytest.raises(ConversionError, match=message):
        convert([made["spd"], made["spc"]], tmp_path / "out", ConvertOptions())


def test_an_spd_whose_header_asks_for_terabytes_is_refused_before_reading(tmp_path):
    import resource

    made = edax_map(tmp_path / "in")
    data = bytearray(made["spd"].read_bytes())
    data[24:36] = np.array([2**20, 2**20, 2**12], "<u4").tobytes()  # points, lines, channels: 8 PB of counts
    made["spd"].write_bytes(bytes(data))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConversionError, match=r"^map\.spd is truncated: its header says 1048576x1048576 points"):
        convert([made["spd"], made["spc"]], tmp_path / "out", ConvertOptions())
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: nothing was allocated
