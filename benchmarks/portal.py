"""Start a portal web process for a benchmark, on embedded defaults in a scratch data dir."""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def web(data_dir: Path, worker: bool = False, **settings: str):
    """Yield (base URL, process) of `upload-portal serve` (web only unless `worker`) with PORTAL_* settings."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
    env |= {"PORTAL_DATA_DIR": str(data_dir), "PORTAL_PORT": str(port)} | settings
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", *([] if worker else ["--no-worker"])], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                requests.get(base + "/login", timeout=5)
                break
            except requests.RequestException:  # not listening yet, or still starting
                time.sleep(0.1)
        yield base, process
    finally:
        process.terminate()
        process.wait(timeout=30)


def arguments(doc: str, size_mib: int, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """--size-mib and --json-out (for benchmarks/run.py), with the benchmark's own options."""
    parser = parser or argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=size_mib)
    parser.add_argument("--json-out", help="also write the rows as JSON here (benchmarks/run.py)")
    return parser.parse_args()


@contextmanager
def scratch() -> Iterator[Path]:
    """A temporary folder for a benchmark's files, removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix="portal-bench-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
