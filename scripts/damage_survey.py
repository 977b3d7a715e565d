"""Damage every sample as a cut copy or a failing disk would, convert each copy under a time and an
address-space limit, and count what became of them per sample.

    python scripts/damage_survey.py [--only REGEX] [--json-out rows.json]

File groups stay together (an .emi with its .ser files, an .mrc with its sidecar), as
converters.grouping forms them; each file of a group is damaged in turn, its partners left whole. A
copy is cut (after 64, 1024 and 4096 bytes, at 1, 10, 50 and 90 % and by its last byte), has four
bytes inverted or sixteen zeroed in its first 4 KiB (seeded by the file's name: the same copies on
every run), or an eighth of it zeroed in the middle. Outcomes:

  converted        as the whole file does (same warnings)
  converted+warn   with a warning the whole file does not give
  cut-accepted     a cut copy (not by its last byte) converted without a warning: data lost unsaid
  specific         a ConversionError in the plugin's own words
  net              the registry's "<file> could not be read: <Exception>: ..." (see converters.registry)
  escaped          an exception other than ConversionError left convert()
  memory / timeout / crash   the address-space cap, the time limit, a signal
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from converters import ConversionError, ConvertOptions, convert  # noqa: E402
from converters.grouping import group_files  # noqa: E402
from converters.registry import warm_up  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
NET = re.compile(r" could not be read: [\w.]+: ")
OUTCOMES = ["converted", "converted+warn", "cut-accepted", "specific", "net", "escaped", "memory", "timeout", "crash"]


def groups(samples: Path) -> list[list[tuple[str, str]]]:
    """(name in the copy, sample it is copied from) per file of each group. The EPU sidecar's own .mrc
    is not shipped: a sample .mrc under its stem goes with it (SOURCES.md)."""
    found = [[(name, name) for name in g.files] for g in group_files(sorted(os.listdir(samples))) if g.error is None]
    return found + [[("Atlas_1.mrc", "temp.mrc"), ("Atlas_1.xml", "Atlas_1.xml")]]


def damaged(data: bytes, seed: str) -> list[tuple[str, bytes]]:
    size, rng, head = len(data), random.Random(seed), min(4096, len(data))
    copies = [(f"cut@{n}", data[:n]) for n in (64, 1024, 4096) if n < size]
    copies += [(f"cut{p}%", data[:size * p // 100]) for p in (1, 10, 50, 90) if size * p // 100]
    copies.append(("cut-1", data[:-1]))
    for i in range(3):
        flipped = bytearray(data)
        for _ in range(4):
            flipped[rng.randrange(head)] ^= 0xFF
        copies.append((f"flip#{i}", bytes(flipped)))
    for i in range(2):
        at = rng.randrange(max(1, head - 16))
        copies.append((f"zero16#{i}", data[:at] + bytes(len(data[at:at + 16])) + data[at + 16:]))
    start, end = size // 2 - size // 16, size // 2 + size // 16
    copies.append(("zeroblock", data[:start] + bytes(end - start) + data[end:]))
    return copies


def run_capped(files: list[Path], out: Path, seconds: float, cap: int) -> dict:
    """convert() in a forked child (the readers already imported) under RLIMIT_AS; its report, wall
    time and peak RSS."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave, whatever happens
        try:
            os.close(read_end)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
            try:
                result = convert(files, out, ConvertOptions(workers=1))
                report = {"outcome": "converted", "warnings": result.warnings + result.notes}
            except ConversionError as e:
                report = {"outcome": "refused", "message": str(e)}
            except BaseException as e:  # noqa: BLE001 - what escapes is what this survey looks for
                report = {"outcome": "escaped", "message": f"{type(e).__module__}.{type(e).__name__}: {e}"[:500]}
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    started, chunks, killed = time.monotonic(), [], False
    while True:
        left = seconds - (time.monotonic() - started)
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            killed = True
            break
        if select.select([read_end], [], [], left)[0]:
            chunk = os.read(read_end, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    os.close(read_end)
    _, status, usage = os.wait4(pid, 0)
    if killed:
        report = {"outcome": "timeout"}
    elif not chunks:
        report = {"outcome": "crash", "message": f"wait status {status}"}
    else:
        report = json.loads(b"".join(chunks))
    return report | {"seconds": round(time.monotonic() - started, 2), "rss_mib": usage.ru_maxrss // 1024}


def outcome(report: dict, whole: dict, label: str) -> str:
    if report["outcome"] == "converted":
        if set(report["warnings"]) - set(whole.get("warnings", [])):
            return "converted+warn"
        return "cut-accepted" if label.startswith("cut") and label != "cut-1" else "converted"
    if report["outcome"] == "refused":
        if "asks for more memory" in report["message"]:  # the registry's words for a MemoryError
            return "memory"
        return "net" if NET.search(report["message"]) else "specific"
    return report["outcome"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=Path, default=SAMPLES)
    parser.add_argument("--only", help="survey only the groups whose first file matches this expression")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--memory-mib", type=int, default=1536, help="the child's address-space cap")
    parser.add_argument("--json-out", help="write every case (sample, copy, outcome, message, time, RSS) here")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the readers log every damaged copy at length: the table says it all
    warm_up()
    rows = []
    for group in groups(args.samples):
        if args.only and not re.search(args.only, group[0][0]):
            continue
        with tempfile.TemporaryDirectory(prefix="damage-") as scratch:
            work = Path(scratch)
            files = [work / name for name, _ in group]
            for path, (_, source) in zip(files, group):
                shutil.copy(args.samples / source, path)
            whole = run_capped(files, work / "whole", args.seconds, args.memory_mib * 2**20)
            for path in files:
                original = path.read_bytes()
                for label, data in damaged(original, path.name):
                    path.write_bytes(data)
                    report = run_capped(files, work / "out", args.seconds, args.memory_mib * 2**20)
                    shutil.rmtree(work / "out", ignore_errors=True)
                    rows.append(report | {"group": group[0][0], "file": path.name, "copy": label,
                                          "class": outcome(report, whole, label)})
                path.write_bytes(original)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=1))
    table: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        table[row["group"]][row["class"]] += 1
    print("| sample | " + " | ".join(OUTCOMES) + " | max s | max RSS MiB |")
    print("|---" * (len(OUTCOMES) + 3) + "|")
    for name, counts in table.items():
        mine = [r for r in rows if r["group"] == name]
        print(f"| {name} | " + " | ".join(str(counts[c] or "") for c in OUTCOMES)
              + f" | {max(r['seconds'] for r in mine)} | {max(r['rss_mib'] for r in mine)} |")
    total = Counter(row["class"] for row in rows)
    print("| all | " + " | ".join(str(total[c]) for c in OUTCOMES) + " | | |")
    return 1 if any(total[c] for c in ("net", "escaped", "memory", "timeout", "crash")) else 0


if __name__ == "__main__":
    sys.exit(main())
