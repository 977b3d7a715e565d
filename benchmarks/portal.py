"""Start a portal web process for a benchmark, on embedded defaults in a scratch data dir."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
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
