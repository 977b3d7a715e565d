"""EDS and other spectra: Bruker .bcf/.spx, EDAX .spc, EMSA/MSA. Values checked against RosettaSciIO's
own output (a whole, non-lazy read) and the files' own text, never against what we wrote."""
from __future__ import annotations

import shutil
import warnings
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import tifffile

from converters import ConversionError, ConvertOptions, convert
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


def test_cut_bcf_says_which_file_cannot_be_read(tmp_path):
    path = tmp_path / "map.bcf"
    path.write_bytes(sample("16x16_12bit_packed_8bit.bcf").read_bytes()[:4096])
    with pytest.raises(ConversionError, match=r"^map\.bcf.*(damaged|incomplete|truncated)"):
        convert([path], tmp_path / "out", ConvertOptions())


def test_truncated_spc_names_what_the_header_says(tmp_path):
    path = tmp_path / "spot.spc"
    path.write_bytes(sample("647_leo_edax_test.spc").read_bytes()[:5000])
    with pytest.raises(ConversionError, match=r"^spot\.spc is truncated: its header says 4096 channels from byte "
                                              r"3840 \(20224 bytes\), the file holds 5000"):
        convert([path], tmp_path / "out", ConvertOptions())


def test_msa_with_an_unreadable_body_names_the_file(tmp_path):
    path = tmp_path / "spot.msa"
    head = sample("647_leo_edax_test.msa").read_bytes()[:1200]  # cut in the data, then a line of text
    path.write_bytes(head[: head.rindex(b"\n") + 1] + b"10.0, abc\n")
    with pytest.raises(ConversionError, match=r"^spot\.msa is not a readable EMSA/MSA file"):
        convert([path], tmp_path / "out", ConvertOptions())


def test_emsa_suffix_is_read(tmp_path):
    shutil.copy(sample("647_leo_edax_test.msa"), tmp_path / "spot.emsa")
    assert convert([tmp_path / "spot.emsa"], tmp_path / "out", ConvertOptions()).status == "converted"
