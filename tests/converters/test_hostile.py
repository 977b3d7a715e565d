"""Hostile inputs (issue 23): files of a few kilobytes that declare gigabytes, millions of entries or
thousands of levels are answered with a message that says what they claim, in bounded memory and time.

Each conversion runs in a child process whose address space is capped (RLIMIT_AS) and which is killed
after a time-out: a regression fails its test instead of taking the machine down or hanging CI. Under
the cap an unbounded allocation ends in MemoryError, which the registry reports in its own generic words,
so each test asserts its specific message, not merely a refusal.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import ROOT

MEMORY_CAP = 1536 * 2**20
TIMEOUT = 120  # a guard against a hang, far above what any of these takes; nothing here is timed

_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
    from tests.converters import hostile_files
    from converters import ConversionError, ConvertOptions, convert
    tmp = Path({tmp!r})
    files = getattr(hostile_files, {builder!r})(tmp)
    started = time.monotonic()
    try:
        result = convert(files, tmp / "out", ConvertOptions(workers=1))
        report = {{"outcome": "converted", "keys": len(result.metadata)}}
    except ConversionError as e:
        report = {{"outcome": "refused", "message": str(e)}}
    report["seconds"] = round(time.monotonic() - started, 2)
    report["bytes"] = sum(f.stat().st_size for f in files)
    report["rss_mib"] = next(int(line.split()[1]) for line in open("/proc/self/status")
                             if line.startswith("VmHWM:")) // 1024
    print(json.dumps(report))
""")


def convert_capped(builder: str, tmp: Path, root: Path = ROOT) -> dict:
    """Build one hostile input and convert it in a capped child process; its outcome, peak RSS and time."""
    script = _CHILD.format(root=str(root), cap=MEMORY_CAP, tmp=str(tmp), builder=builder)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT, cwd=root)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


REFUSED = [
    # 1: rsciio would build a list of 2**31 (DM3) or 2**62 (DM4) empty tuples
    ("dm3_struct_array", r"^x\.dm3: tag a declares 2,147,483,647 values; the tags beside a DigitalMicrograph "
                         r"image hold at most 2,097,152"),
    ("dm4_struct_array", r"^x\.dm4: tag a declares 4,611,686,018,427,387,904 values"),
    # 2 and 10: a deep sidecar was "the MRC could not be read: RecursionError"
    ("epu_deep", r"^a\.xml: its metadata XML nests more than 100 levels deep"),
    # 3: spectra declared far beyond what the file stores
    ("velox_stream_bins", r"^x\.emd: a spectrum stream declares 30,000,000 channels; no spectrometer records more "
                          r"than 1,048,576"),
    ("velox_stream_sparse", r"^x\.emd declares 137\.4 GB of spectrum stream in 0 bytes of stored data: "
                            r"refused as a decompression bomb \(none of it is stored\)$"),
    ("velox_eels_sparse", r"^x\.emd declares 68\.7 GB of EELS spectrum image in 0 bytes of stored data"),
    ("berkeley_spectrum_sparse", r"^x\.emd declares 80\.0 MB of data /data/spectrum/data in 32\.8 KB of stored data"),
    # 4: 64-bit images were scanned for their range before the bomb check
    ("velox_int64_sparse", r"^x\.emd declares 137\.4 GB of pixels in 0 bytes of stored data"),
    ("berkeley_int64_sparse", r"^x\.emd declares 12\.8 GB of data /data/image/data in 0 bytes of stored data"),
    # 5: every element of a .ser pointing at the same bytes
    ("ser_spectra_one_offset", r"^t_1\.ser: its spectra overlap: one of 16,026 bytes starts at byte"),
    ("ser_frames_one_offset", r"^t_1\.ser: its frames overlap: one of 16,434 bytes starts at byte"),
    # 10: the TIFF header of a passed-through OME-TIFF, and an MRC header read in mrcfile's byte order
    ("ome_tiff_header_lies", r"^x\.ome\.tif declares 10\.0 GB of pixels in 880 bytes of file: refused"),
    # a CZI passed through is checked for truncation entry by entry of its directory, within the directory
    ("czi_directory_count", r"^x\.czi: its CZI subblock directory is damaged \(entry 2 of 2147483647\)$"),
    ("mrc_stamp_big_endian", r"^a\.mrc: the MRC header \(read big-endian, by its machine stamp and mode\) declares "
                             r"67108864x67108864x16777216 pixels of mode 0"),
]


@pytest.mark.parametrize("builder, message", REFUSED, ids=[b for b, _ in REFUSED])
def test_hostile_input_is_refused_with_what_it_claims(tmp_path, builder, message):
    report = convert_capped(builder, tmp_path)
    assert report["outcome"] == "refused", report
    assert re.match(message, report["message"]), report["message"]
    assert report["bytes"] < 512 * 1024


@pytest.mark.parametrize("builder, keys", [("epu_siblings", 20_000), ("czi_siblings", 20_000)])
def test_twenty_thousand_siblings_are_named_in_linear_time(tmp_path, builder, keys):
    """2: each sibling's key was found by appending "+" until unused, cubic in their number; now every
    one of them is kept under its own name."""
    report = convert_capped(builder, tmp_path)
    assert report["outcome"] == "converted", report
    assert report["keys"] >= keys


def test_unclosed_object_info_is_read_in_one_pass(tmp_path):
    """5: 100,000 unclosed <ObjectInfo> (1.2 MB) made the regular expression search quadratic (about 40
    minutes: far past the time-out); found in one pass, the unclosed first one is a cut .emi."""
    report = convert_capped("emi_unclosed", tmp_path)
    assert report["outcome"] == "refused", report
    assert report["message"] == ("t.emi is truncated: its metadata XML (<ObjectInfo> from byte 2) is cut off where "
                                 "the file ends, at byte 1200002")
