"""The duplicate check before sending against the upload it spares, in one run on loopback: a file
is sent through the API and imported; the same file in a new import is hashed locally and checked
(POST /api/jobs/<id>/check), which ends it "duplicate" without a byte sent.

    python benchmarks/duplicate_check.py [--size-mib 512]

Goal (issue 15): the duplicate answered in under a quarter of the upload's time.
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import numpy as np
import requests
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.client import sha1_of  # noqa: E402
from benchmarks import results  # noqa: E402
from benchmarks.portal import arguments, scratch, web  # noqa: E402
from benchmarks.upload_ingest import upload  # noqa: E402


def make_ome_tiff(path: Path, size: int) -> None:
    """An OME-TIFF the portal imports as it is, of noisy 16-bit planes (written plane by plane)."""
    ny, nx = 4096, 4096
    planes = max(1, size // (ny * nx * 2))
    rng = np.random.default_rng(15)
    tifffile.imwrite(path, (rng.integers(0, 4096, (ny, nx), np.uint16) for _ in range(planes)),
                     shape=(planes, ny, nx), dtype=np.uint16, ome=True, metadata={"axes": "ZYX"})


def signed_in(base: str, user: str) -> tuple[requests.Session, dict]:
    session = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', session.get(base + "/login").text).group(1)
    session.post(base + "/login", data={"username": user, "csrf_token": token})
    me = session.get(base + "/api/me").json()
    session.headers["X-CSRFToken"] = me["csrf_token"]
    return session, me


def wait_until_ended(session: requests.Session, base: str, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [batch] = session.get(base + "/api/batches").json()["batches"][:1]
        ended = {s for s in batch["states"] if s in ("imported", "duplicate", "failed", "cancelled")}
        if ended:
            return ended.pop()
        time.sleep(0.5)
    raise SystemExit("the first import did not end")


def check_again(session: requests.Session, me: dict, base: str, path: Path) -> tuple[float, str]:
    """Seconds to hash the file and have the server answer for a new import of it; the job's state."""
    batch = session.post(base + "/api/batches", json={
        "group_id": me["groups"][0]["id"], "files": [{"name": "again.ome.tif", "size": path.stat().st_size}]}).json()
    job = batch["jobs"][0]
    start = time.perf_counter()
    sha1 = sha1_of(path)
    answer = session.post(f"{base}/api/jobs/{job['id']}/check",
                          json={"files": [{"id": job["files"][0]["id"], "sha1": sha1}]}).json()
    return time.perf_counter() - start, answer["job"]["state"]


def main() -> None:
    args = arguments(__doc__, 512)
    with scratch() as work:
        source = work / "stack.ome.tif"
        make_ome_tiff(source, args.size_mib << 20)
        with web(work / "data", worker=True, PORTAL_STAGING_RESERVE="0") as (base, _):
            upload_seconds = upload(base, source, keep=True)
            session, me = signed_in(base, "bench")
            if (first := wait_until_ended(session, base)) != "imported":
                raise SystemExit(f"the first import ended {first}")
            check_seconds, state = check_again(session, me, base, source)
        if state != "duplicate":
            raise SystemExit(f"the second import of the same file is {state}, not duplicate")
        mib = source.stat().st_size / 2**20
        print(f"{'what':<40}{'seconds':>9}")
        print(f"{f'upload through the API ({mib:.0f} MiB)':<40}{upload_seconds:>9.2f}")
        print(f"{'hash locally + duplicate check':<40}{check_seconds:>9.2f}")
        print(f"check / upload: {check_seconds / upload_seconds:.2f}   (goal < 0.25)")
        results.write(args.json_out, "duplicate_check", [
            {"case": f"{mib:.0f} MiB already in OMERO", "ratio": check_seconds / upload_seconds,
             "baseline": "upload API", "goal": "< 0.25", "note": "ended duplicate, no byte sent"}])


if __name__ == "__main__":
    main()
