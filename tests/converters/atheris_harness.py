"""Coverage-guided fuzzing of format identification and the readers with atheris (libFuzzer).

    python tests/converters/atheris_harness.py NAME [PARTNER=SAMPLE] -- [libFuzzer flags] CORPUS_DIR

Each input is written as NAME (e.g. x.mrc) beside an optional partner file copied from a sample
(e.g. x.xml=Atlas_1.xml) and converted. A ConversionError is the expected answer to bad bytes; any
other exception is a crash that libFuzzer reports (exit status non-zero, input saved). Run by
tests/converters/test_fuzz.py with a fixed budget.
"""
from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

import atheris

logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # its warnings about bad tags would drown the report

with atheris.instrument_imports(include=["converters"]):
    from converters import ConversionError, ConvertOptions, convert


def main() -> None:
    split = sys.argv.index("--")
    work = Path(tempfile.mkdtemp(prefix="atheris-"))
    files = [work / sys.argv[1]]
    for pair in sys.argv[2:split]:
        partner, source = pair.split("=", 1)
        shutil.copy(source, work / partner)
        files.append(work / partner)

    def one_input(data: bytes) -> None:
        files[0].write_bytes(data)
        try:
            convert(files, work / "out", ConvertOptions())
        except ConversionError as e:
            if not str(e):
                raise AssertionError("a ConversionError must say what is wrong") from None
        shutil.rmtree(work / "out", ignore_errors=True)

    atheris.Setup([sys.argv[0], *sys.argv[split + 1:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
