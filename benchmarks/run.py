"""Run every benchmark and print one table of ratios against baselines measured in the same run.

    python benchmarks/run.py [--quick]

--quick uses small inputs (minutes instead of tens of minutes); the figures then say less.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    size = "128" if args.quick else "512"
    plans = [
        ("upload_ingest.py", ["--size-mib", size]),
        ("page_upload.py", ["--size-mib", size]),
        ("duplicate_check.py", ["--size-mib", size]),
        ("convert.py", ["--size-mib", size]),
        ("keep_original.py", ["--size-mib", size]),
        ("sse_latency.py", ["--streams", "100", "--events", "10" if args.quick else "30"]),
    ]
    rows, failed = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for script, extra in plans:
            out = Path(scratch) / f"{script}.json"
            print(f"== {script} {' '.join(extra)}", flush=True)
            done = subprocess.run([sys.executable, str(HERE / script), *extra, "--json-out", str(out)])
            if done.returncode != 0 or not out.exists():
                failed.append(script)
                continue
            rows += json.loads(out.read_text())
    print(f"\n{'benchmark':<17}{'case':<30}{'ratio':>8}  {'baseline':<17}{'goal':<14}note")
    for row in rows:
        print(f"{row['benchmark']:<17}{row['case']:<30}{row['ratio']:>8.2f}  {row['baseline']:<17}{row['goal']:<14}{row['note']}")
    for script in failed:
        print(f"{script}: FAILED (see its output above)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
