"""The rows every benchmark can hand to `benchmarks/run.py`: one per case, a ratio against a baseline
measured in the same run, and the goal it is held to."""
from __future__ import annotations

import json
from pathlib import Path


def write(path: str | None, benchmark: str, rows: list[dict]) -> None:
    """rows: {"case", "ratio", "baseline", "goal", "note"}; nothing happens without --json-out."""
    if path:
        Path(path).write_text(json.dumps([{"benchmark": benchmark, **row} for row in rows]))
