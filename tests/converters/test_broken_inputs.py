"""Broken inputs: each gives its own ConversionError; none crashes, hangs or allocates gigabytes."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from converters import ConversionError, ConvertOptions, convert
from tests.converters.broken_files import CORPUS
from tests.helpers import ROOT


@pytest.mark.parametrize("build, message", CORPUS, ids=[b.__name__ for b, _ in CORPUS])
def test_broken_input_gives_specific_error(tmp_path, build, message):
    files = build(tmp_path)
    with pytest.raises(ConversionError, match=message):
        convert(files, tmp_path / "out", ConvertOptions())
    assert not any((tmp_path / "out").glob("*.part")) if (tmp_path / "out").exists() else True


def test_whole_corpus_runs_in_bounded_memory_and_time(tmp_path):
    """Every broken input in one fresh process: all refused, peak RSS well under a gigabyte."""
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from tests.converters import broken_files as corpus
        from converters import ConversionError, ConvertOptions, convert
        outcomes = []
        for i, (build, _) in enumerate(corpus.CORPUS):
            tmp = Path({str(tmp_path)!r}) / str(i)
            tmp.mkdir()
            try:
                convert(build(tmp), tmp / "out", ConvertOptions())
                outcomes.append("converted")
            except ConversionError:
                outcomes.append("refused")
        hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        print(json.dumps({{"outcomes": outcomes, "rss_kib": hwm}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["outcomes"] == ["refused"] * len(CORPUS)
    assert report["rss_kib"] < 300 * 1024
