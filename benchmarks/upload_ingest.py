"""Ingest throughput: a large file through the chunked upload API on loopback, against `cp` of the
same file in the same run, with hashlib's SHA-1 rate on this CPU beside them (the client hashes every
byte); and the web process's peak memory.

    python benchmarks/upload_ingest.py [--size-mib 1024] [--chunk-mib 16]

Goals (issues 2 and 15): at most 2x `cp` (the API at >= 0.5x its rate); web peak RSS under 200 MiB.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import results  # noqa: E402
from benchmarks.portal import arguments, scratch, web  # noqa: E402


def make_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(size >> 20):
            f.write(block[:8] + i.to_bytes(8, "little") + block[16:])


def time_cp(src: Path, dst: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["cp", str(src), str(dst)], check=True)
    os.sync()
    elapsed = time.perf_counter() - start
    dst.unlink()
    return elapsed


def time_sha1(size: int) -> float:
    """Seconds for hashlib's SHA-1 over `size` bytes already in memory: this CPU's hashing rate."""
    block = os.urandom(16 << 20)
    digest = hashlib.sha1()
    start = time.perf_counter()
    for _ in range(max(1, size // len(block))):
        digest.update(block)
    return time.perf_counter() - start


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def upload(base: str, path: Path, chunk: int, keep: bool = False) -> float:
    """Seconds to send the file through the API (one chunk in flight, the next read and hashed
    meanwhile) until the server has checked it and synced it to disk. Unless `keep`, the job is then
    cancelled, which deletes its staged copy as `time_cp` deletes its copy: each round writes into
    recycled page cache, not into memory the virtual machine must first fault in (that costs 2-4x)."""
    session = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', session.get(base + "/login").text).group(1)
    session.post(base + "/login", data={"username": "bench", "csrf_token": token})
    me = session.get(base + "/api/me").json()
    headers = {"X-CSRFToken": me["csrf_token"], "Content-Type": "application/octet-stream"}
    size = path.stat().st_size
    batch = session.post(base + "/api/batches", headers={"X-CSRFToken": me["csrf_token"]}, json={
        "group_id": me["groups"][0]["id"], "files": [{"name": path.name, "size": size}]}).json()
    file_id = batch["jobs"][0]["files"][0]["id"]
    digest = hashlib.sha1()
    start = time.perf_counter()
    with open(path, "rb") as f, ThreadPoolExecutor(1) as reader:
        def next_block() -> bytes:  # read and hash the next chunk while the current one travels
            block = f.read(chunk)
            digest.update(block)
            return block

        offset, upcoming = 0, reader.submit(next_block)
        while block := upcoming.result():
            upcoming = reader.submit(next_block)
            response = session.put(f"{base}/api/files/{file_id}?offset={offset}", data=block, headers=headers)
            response.raise_for_status()
            offset = response.json()["received"]
    done = session.post(f"{base}/api/files/{file_id}/complete", headers={"X-CSRFToken": me["csrf_token"]},
                        json={"sha1": digest.hexdigest()})
    done.raise_for_status()
    os.sync()
    seconds = time.perf_counter() - start
    if not keep:
        session.post(f"{base}/api/jobs/{batch['jobs'][0]['id']}/cancel",
                     headers={"X-CSRFToken": me["csrf_token"]}).raise_for_status()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunk-mib", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many, cp and upload alternating")
    args = arguments(__doc__, 1024, parser)
    with scratch() as work:
        source = work / "sample.emd"
        make_file(source, args.size_mib << 20)
        with web(work / "data", PORTAL_STAGING_RESERVE="0") as (base, process):
            cps, uploads, sha1s = [], [], []
            for _ in range(args.rounds):  # alternating, so all meet the machine in the same state
                cps.append(time_cp(source, work / "copy.emd"))
                sha1s.append(time_sha1(args.size_mib << 20))
                uploads.append(upload(base, source, args.chunk_mib << 20))
            rss = max(peak_rss_mib(pid) for pid in [process.pid, *children(process.pid)])
        baseline, upload_seconds, sha1_seconds = min(cps), min(uploads), min(sha1s)
        mib = args.size_mib
        print(f"{'what':<34}{'seconds':>9}{'MiB/s':>9}{'ratio':>8}")
        print(f"{f'cp (baseline, best of {args.rounds})':<34}{baseline:>9.2f}{mib / baseline:>9.0f}{1:>8.2f}")
        print(f"{f'hashlib SHA-1, in memory, best of {args.rounds}':<34}{sha1_seconds:>9.2f}"
              f"{mib / sha1_seconds:>9.0f}{sha1_seconds / baseline:>8.2f}")
        print(f"{f'upload API, best of {args.rounds}':<34}{upload_seconds:>9.2f}"
              f"{mib / upload_seconds:>9.0f}{upload_seconds / baseline:>8.2f}   (goal <= 2.00)")
        print(f"web process peak RSS: {rss:.0f} MiB   (goal < 200)")
        results.write(args.json_out, "upload_ingest", [
            {"case": f"{mib} MiB, {args.chunk_mib} MiB chunks", "ratio": upload_seconds / baseline, "baseline": "cp",
             "goal": "<= 2.0", "note": f"SHA-1 {mib / sha1_seconds:.0f} MiB/s, cp {mib / baseline:.0f} MiB/s, "
                                                       f"web peak RSS {rss:.0f} MiB (goal < 200)"}])


if __name__ == "__main__":
    main()
