"""converters.cli: groups inputs as the portal does and reports one JSON line per job."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from converters.cli import main
from tests.helpers import ROOT, sample


def run(capsys, *argv: str) -> tuple[int, list[dict]]:
    code = main(list(argv))
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_groups_converts_and_reports_json(tmp_path, capsys):
    inputs = [sample(n) for n in ("16x16_STEM_BF_DF_acquire_2.ser", "16x16_STEM_BF_DF_acquire.emi",
                                  "16x16_STEM_BF_DF_acquire_1.ser", "FEI-Helios-Ebeam-8bits.tif")]
    code, jobs = run(capsys, *map(str, inputs), "--out", str(tmp_path), "--json", "--timezone", "America/New_York")
    assert code == 0
    assert [job["status"] for job in jobs] == ["converted", "converted"]
    tia, sem = sorted(jobs, key=lambda j: j["inputs"][0].endswith(".tif"))
    assert [p.rsplit("/", 1)[-1] for p in tia["inputs"]] == [
        "16x16_STEM_BF_DF_acquire.emi", "16x16_STEM_BF_DF_acquire_1.ser", "16x16_STEM_BF_DF_acquire_2.ser"]
    assert tia["channels"] == ["BF", "DF4"] and tia["shape"] == {"T": 1, "C": 2, "Z": 1, "Y": 16, "X": 16}
    assert tia["acquired"] == "2016-02-21T16:53:06+00:00"  # the .ser time tag is UTC, whatever the zone
    assert sem == {
        "inputs": [str(inputs[3])], "output": str(tmp_path / "FEI-Helios-Ebeam-8bits.ome.tiff"),
        "status": "converted", "error": None, "microscope": "Helios NanoLab 660",
        "acquired": "2016-06-13T17:06:40-04:00", "pixel_size": {"x": 3.3724, "y": 3.3724, "unit": "µm"},
        "channels": ["ETD SE"], "shape": {"T": 1, "C": 1, "Z": 1, "Y": 442, "X": 512},
        "notes": ["the data bar (29 rows at the bottom) was cropped"],
        "outputs": [str(tmp_path / "FEI-Helios-Ebeam-8bits.ome.tiff")], "attachments": [], "warnings": [],
        "accounted": [{"source": "channel ETD SE", "went": "channel", "where": "FEI-Helios-Ebeam-8bits: ETD SE"}],
    }


def test_failed_job_exits_1_and_names_missing_partner(tmp_path, capsys):
    emi = tmp_path / "acq.emi"
    shutil.copy(sample("128x128-TEM_search.emi"), emi)
    code, jobs = run(capsys, str(emi), str(sample("sample6_001.tif")), "--out", str(tmp_path / "o"), "--json")
    assert code == 1
    assert jobs[0]["status"] == "failed" and jobs[0]["output"] is None and jobs[0]["outputs"] == []
    assert jobs[0]["error"] == "acq.emi has no .ser file (expected acq_1.ser beside it)"
    assert jobs[1]["status"] == "converted"


def test_microscope_names_file(tmp_path, capsys):
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"TALOS-12TAN18C": "Talos L120C"}))
    shutil.copy(sample("temp.mrc"), tmp_path / "Atlas_1.mrc")
    shutil.copy(sample("Atlas_1.xml"), tmp_path / "Atlas_1.xml")
    code, [job] = run(capsys, str(tmp_path / "Atlas_1.xml"), str(tmp_path / "Atlas_1.mrc"), "--out",
                      str(tmp_path / "o"), "--json", "--microscope-names", str(names))
    assert code == 0 and job["microscope"] == "Talos L120C"
    assert job["acquired"] == "2023-06-02T15:03:39.196274+02:00"


def test_bad_timezone_is_a_usage_error(tmp_path, capsys):
    assert main([str(sample("sample6_001.tif")), "--out", str(tmp_path), "--timezone", "Mars/Olympus"]) == 2
    assert "unknown time zone" in capsys.readouterr().err


def test_runs_as_a_module(tmp_path):
    run = subprocess.run([sys.executable, "-m", "converters.cli", str(sample("sample6_001.tif")), "--out",
                          str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("converted ") and (tmp_path / "sample6_001.ome.tiff").is_file()


def test_same_names_in_two_folders_do_not_overwrite(tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(sample("sample6_001.tif"), tmp_path / folder / "img.tif")
    code, jobs = run(capsys, str(tmp_path / "a" / "img.tif"), str(tmp_path / "b" / "img.tif"), "--out",
                     str(tmp_path / "o"), "--json")
    assert code == 0
    assert [j["output"] for j in jobs] == [str(tmp_path / "o" / "img.ome.tiff"), str(tmp_path / "o" / "2" / "img.ome.tiff")]


def test_json_lists_every_image_attachment_warning_and_place(tmp_path, capsys):
    code, [job] = run(capsys, str(sample("example_velox_EELS_EDS.emd")), "--out", str(tmp_path), "--json")
    assert code == 0
    assert job["output"] == job["outputs"][0] == str(tmp_path / "example_velox_EELS_EDS.ome.tiff")
    assert len(job["outputs"]) == 2 and all(Path(p).is_file() for p in job["outputs"])
    assert {a["kind"] for a in job["attachments"]} == {"spectrum-csv", "spectrum-plot"}
    assert all(Path(a["path"]).is_file() for a in job["attachments"])
    assert {"source", "went", "where"} == set(job["accounted"][0])
    # the EELS maps carry no pixel size, but the other channels of their scan do: nothing to check
    assert job["warnings"] == []


def test_text_report_counts_further_images(tmp_path):
    run = subprocess.run([sys.executable, "-m", "converters.cli", str(sample("example_velox_EELS_EDS.emd")),
                          "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.rstrip().endswith("(1Tx7Cx1Zx16Yx20X) and 1 more image")
