"""Live-status latency: from the API call that changes a job to the event arriving on each of N open
streams, against a plain HTTP round trip to the same server in the same run.

    python benchmarks/sse_latency.py [--streams 100] [--events 30]

Goal (issue 9): p95 under 250 ms at 100 open streams.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import results  # noqa: E402
from benchmarks.portal import web  # noqa: E402
from tests.sse_clients import StreamReader, signed_in  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--json-out", help="also write the rows as JSON here (benchmarks/run.py)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="portal-sse-"))
    try:
        with web(work, PORTAL_WEB_THREADS=str(args.streams + 40)) as (base, _process):
            p95, rtt = measure(base, args.streams, args.events)
        results.write(args.json_out, "sse_latency", [
            {"case": f"{args.streams} streams", "ratio": p95 / rtt, "baseline": "HTTP round trip",
             "goal": "p95 < 250 ms", "note": f"p95 {p95 * 1e3:.0f} ms"}])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(base: str, streams: int, events: int) -> tuple[float, float]:
    session, me = signed_in(base, "bench")
    readers = [StreamReader(signed_in(base, "bench")[0], base + "/api/events?after=0") for _ in range(streams)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.ready.wait(30)
    rtts, sent = [], {}
    for i in range(events):
        start = time.monotonic()
        session.get(base + "/api/me")
        rtts.append(time.monotonic() - start)
        # from the call's start: its event may arrive before its answer does (timed from the answer,
        # latencies came out negative)
        called = time.monotonic()
        batch = session.post(base + "/api/batches", json={
            "group_id": me["groups"][0]["id"], "files": [{"name": f"e{i}.tif", "size": 1}]}).json()
        job_id = batch["jobs"][0]["id"]
        sent[job_id] = called
        session.post(f"{base}/api/jobs/{job_id}/cancel")
        time.sleep(0.05)
    time.sleep(2)
    latencies = [arrived - sent[event["job"]["id"]] for reader in readers for arrived, event in reader.events
                 if event["job"]["state"] == "uploading" and event["job"]["id"] in sent]
    expected = streams * events
    rtt = statistics.median(rtts)
    print(f"{streams} streams, {events} events each: {len(latencies)} of {expected} deliveries")
    for number, reader in enumerate(readers):  # a shortfall must say where it came from
        got = sum(1 for _, event in reader.events
                  if event["job"]["id"] in sent and event["job"]["state"] == "uploading")
        if got < events:
            why = reader.error or ("never connected" if not reader.ready.is_set() else "still open")
            print(f"  stream {number}: {got} of {events} events ({why})")
    print(f"{'what':<34}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'p95/RTT':>9}")
    print(f"{'HTTP round trip (baseline)':<34}{rtt * 1e3:>9.1f}{percentile(rtts, .95) * 1e3:>9.1f}"
          f"{percentile(rtts, .99) * 1e3:>9.1f}{1:>9.1f}")
    print(f"{'event -> stream':<34}{percentile(latencies, .5) * 1e3:>9.1f}{percentile(latencies, .95) * 1e3:>9.1f}"
          f"{percentile(latencies, .99) * 1e3:>9.1f}{percentile(latencies, .95) / rtt:>9.1f}   (goal p95 < 250 ms)")
    return percentile(latencies, .95), rtt


if __name__ == "__main__":
    main()
