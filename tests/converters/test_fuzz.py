"""Fuzzing format identification and the readers with Hypothesis, for a fixed budget: whatever the
bytes, convert() ends with a ConversionError (a message for the researcher) or a result, never with
another exception."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converters import Conversion, ConversionError, ConvertOptions, convert
from tests.helpers import ROOT, sample

SEEDS = {  # real files to mutate, under the names the portal would give them
    "velox.emd": "fei_example_tem_stack.emd",
    "zeiss.tif": "test_tiff_Zeiss_SEM_1k.tif",
    "fei.tif": "FEI-Helios-Ebeam-8bits.tif",
    "grid.mrc": "20241021_00405_final.mrc",
    "gatan.dm3": "dmTest_float32_nonSquare_diffPixelSize.dm3",
    "gatan.dm4": "dmTest_float32_nonSquare_diffPixelSize.dm4",
}
BUDGET = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                  derandomize=True)  # the same cases on every run: a failure is reproducible


def attempt(name: str, data: bytes, partner: tuple[str, bytes] | None = None) -> None:
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        files = [work / name]
        files[0].write_bytes(data)
        if partner:
            (work / partner[0]).write_bytes(partner[1])
            files.append(work / partner[0])
        try:
            result = convert(files, work / "out", ConvertOptions())
        except ConversionError as e:
            assert str(e), "a ConversionError must say what is wrong"
        else:
            assert isinstance(result, Conversion)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@BUDGET
@given(name=st.sampled_from(["x.emd", "x.tif", "x.mrc", "x.czi", "x.ome.tif", "x.emi", "x.dm3", "x.dm4"]), data=st.binary(max_size=4096))
def test_random_bytes_under_any_name(name, data):
    attempt(name, data)


@BUDGET
@given(seed=st.sampled_from(sorted(SEEDS)), data=st.data())
def test_real_files_with_bytes_flipped_or_cut(seed, data):
    original = bytearray(sample(SEEDS[seed]).read_bytes())
    cut = data.draw(st.integers(min_value=0, max_value=len(original)), label="keep this many bytes")
    mutated = original[:cut]
    for _ in range(data.draw(st.integers(min_value=0, max_value=8), label="flips")):
        if mutated:
            at = data.draw(st.integers(min_value=0, max_value=len(mutated) - 1))
            mutated[at] = data.draw(st.integers(min_value=0, max_value=255))
    partner = ("grid.xml", sample("Atlas_1.xml").read_bytes()) if seed == "grid.mrc" else None
    attempt(seed, bytes(mutated), partner)


@BUDGET
@given(header=st.binary(min_size=0, max_size=2048), ser=st.binary(max_size=2048))
def test_tia_pairs_with_random_content(header, ser):
    attempt("t.emi", header, ("t_1.ser", ser))


# Coverage-guided fuzzing with atheris (libFuzzer): it learns which bytes reach new branches of the
# readers, where Hypothesis mutates blindly. Each target: the input's name, the real files that seed
# its corpus, and the partner files beside it. A fixed number of runs and seed: reproducible.
ATHERIS_TARGETS = {
    "velox": ("x.emd", ["fei_example_tem_stack.emd"], []),
    "sem-tiff": ("x.tif", ["FEI-Helios-Ebeam-8bits.tif", "test_tiff_Zeiss_SEM_1k.tif"], []),
    "mrc": ("x.mrc", ["temp.mrc", "20241021_00405_final.mrc"], [("x.xml", "Atlas_1.xml")]),
    "atlas-xml": ("x.xml", ["Atlas_1.xml"], [("x.mrc", "temp.mrc")]),
    "tia-emi": ("t.emi", ["64x64x5_TEM_preview.emi"], [("t_1.ser", "64x64x5_TEM_preview_1.ser")]),
    "tia-ser": ("t_1.ser", ["64x64x5_TEM_preview_1.ser"], [("t.emi", "64x64x5_TEM_preview.emi")]),
    "dm": ("x.dm4", ["dmTest_float32_nonSquare_diffPixelSize.dm4", "dmTest_float32_nonSquare_diffPixelSize.dm3"], []),
}
ATHERIS_RUNS = 2000


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(ATHERIS_TARGETS))
def test_coverage_guided_fuzzing_finds_no_crash(target, tmp_path):
    name, seeds, partners = ATHERIS_TARGETS[target]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for seed in seeds:
        shutil.copy(sample(seed), corpus)
    run = subprocess.run(
        [sys.executable, str(ROOT / "tests/converters/atheris_harness.py"), name,
         *[f"{partner}={sample(source)}" for partner, source in partners], "--",
         f"-runs={ATHERIS_RUNS}", "-seed=1", "-rss_limit_mb=2048", "-timeout=60",
         f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-5000:]
    assert f"Done {ATHERIS_RUNS} runs" in run.stderr, run.stderr[-2000:]
