"""Ingest throughput: a large file through the chunked upload API on loopback, against `cp` of the
same file in the same run, with hashlib's SHA-1 rate on this CPU beside them (client and server each hash every
byte), the CPU time of both, and the web process's peak memory. The client is `upload-portal push`'s.

    python benchmarks/upload_ingest.py [--size-mib 1024]

Goals (issues 2 and 15): at most 2x `cp` (the API at >= 0.5x its rate); web peak RSS under 200 MiB.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.client import Hashes, PortalClient  # noqa: E402
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


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process so far (this one's own without a pid)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def upload(base: str, path: Path, keep: bool = False) -> float:
    """Seconds to send the file as `upload-portal push` does (the product's client: chunks several
    in flight, hashed as they are read) until the server has checked it and synced it to disk.
    Unless `keep`, the job is then cancelled, which deletes its staged copy as `time_cp` deletes its
    copy: each round writes into recycled page cache, not into memory the virtual machine must first
    fault in (that costs 2-4x)."""
    session = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', session.get(base + "/login").text).group(1)
    session.post(base + "/login", data={"username": "bench", "csrf_token": token})
    me = session.get(base + "/api/me").json()
    session.headers["X-CSRFToken"] = me["csrf_token"]
    client = PortalClient(base, session=session)
    batch = client.create_batch(me["groups"][0]["id"], {path.name: path}, [], None)
    job = batch["jobs"][0]
    start = time.perf_counter()
    hashes = Hashes([path] if job.get("may_be_in_omero", True) else [])  # as push does
    client.send_job(job, {path.name: path}, lambda *_: None, hashes)
    os.sync()
    seconds = time.perf_counter() - start
    if not keep:
        client._call("POST", f"/api/jobs/{batch['jobs'][0]['id']}/cancel")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="best of this many, cp and upload alternating")
    args = arguments(__doc__, 1024, parser)
    with scratch() as work:
        source = work / "sample.emd"
        make_file(source, args.size_mib << 20)
        with web(work / "data", PORTAL_STAGING_RESERVE="0") as (base, process):
            cps, uploads, sha1s = [], [], []
            web_pid = children(process.pid)[0]  # gunicorn's worker: the process that receives
            for _ in range(args.rounds):  # alternating, so all meet the machine in the same state
                cps.append(time_cp(source, work / "copy.emd"))
                sha1s.append(time_sha1(args.size_mib << 20))
                client, server = cpu_seconds(), cpu_seconds(web_pid)
                seconds = upload(base, source)
                uploads.append((seconds, cpu_seconds() - client, cpu_seconds(web_pid) - server))
            rss = max(peak_rss_mib(pid) for pid in [process.pid, *children(process.pid)])
        baseline, sha1_seconds = min(cps), min(sha1s)
        upload_seconds, client_cpu, server_cpu = min(uploads)
        mib = args.size_mib
        print(f"{'what':<34}{'seconds':>9}{'MiB/s':>9}{'ratio':>8}")
        print(f"{f'cp (baseline, best of {args.rounds})':<34}{baseline:>9.2f}{mib / baseline:>9.0f}{1:>8.2f}")
        print(f"{f'hashlib SHA-1, in memory, best of {args.rounds}':<34}{sha1_seconds:>9.2f}"
              f"{mib / sha1_seconds:>9.0f}{sha1_seconds / baseline:>8.2f}")
        print(f"{f'upload API, best of {args.rounds}':<34}{upload_seconds:>9.2f}"
              f"{mib / upload_seconds:>9.0f}{upload_seconds / baseline:>8.2f}   (goal <= 2.00)")
        # where the time goes: on loopback the client and the web process share this machine's cores,
        # and each hashes every byte once
        print(f"  CPU of that round: client {client_cpu:.2f} s, web process {server_cpu:.2f} s "
              f"(SHA-1 of the bytes alone: {sha1_seconds:.2f} s each); {os.cpu_count()} cores")
        # the least time that CPU takes on this machine's cores, were they never idle: what is left
        # between it and the measured time is waiting, not work
        bound = (client_cpu + server_cpu) / (os.cpu_count() or 1)
        print(f"  that CPU on all {os.cpu_count()} cores, never idle: {bound:.2f} s = {bound / baseline:.2f} x cp")
        print(f"web process peak RSS: {rss:.0f} MiB   (goal < 200)")
        results.write(args.json_out, "upload_ingest", [
            {"case": f"{mib} MiB, push client", "ratio": upload_seconds / baseline, "baseline": "cp",
             "goal": "<= 2.0", "note": f"SHA-1 {mib / sha1_seconds:.0f} MiB/s, cp {mib / baseline:.0f} MiB/s, CPU client "
                                                       f"{client_cpu:.2f} s + web {server_cpu:.2f} s (all cores never idle: "
                                                       f"{bound / baseline:.2f} x cp), "
                                                       f"web peak RSS {rss:.0f} MiB (goal < 200)"}])


if __name__ == "__main__":
    main()
