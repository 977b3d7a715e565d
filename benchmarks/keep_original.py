"""Keeping an original in OMERO: time and peak memory of storing one large original as a file
attachment of an image, through the embedded store and through the omero-py adapter (against the
tests' fake server, which hashes and drops the bytes), against `cp` of the same bytes in the same run.

    python benchmarks/keep_original.py [--size-mib 1024]

Each case runs in its own process, so its peak RSS is the storing code's. Goal (issue 12): memory
bounded by the block size, whatever the file's size (peak RSS < 200 MiB). Time is bounded by SHA-1
(every byte is hashed on the way; one core hashes ~400 MiB/s on the CI machine), so against `cp` of
cached bytes expect about 3x.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks import results  # noqa: E402
from benchmarks.upload_ingest import make_file, time_cp  # noqa: E402


def _session(case: str, scratch: Path):
    """An OMERO session of the case's backend, as a context manager."""
    if case == "embedded":
        from app.core.omero.embedded import EmbeddedGateway

        gateway = EmbeddedGateway(scratch / "store", groups=("Lab",))
        return gateway.session(gateway.create_session("bench", 3600))
    import omero.callbacks

    from app.core.omero.omeropy import OmeroPyGateway
    from tests.omero.fake_omero import FakeOmero

    server = FakeOmero()
    server.files.keep_bytes = False  # the fake server would otherwise hold the GiB in our process
    server.store.add_user("bench", [server.store.add_group("Lab")])
    server.store.add_user("root", [], password="rootpw", admin=True)
    omero.callbacks.CmdCallbackI = server.callback_class()  # no live Ice adapter in the fake
    gateway = OmeroPyGateway("omero.invalid", admin_user="root", admin_password="rootpw",
                             client_factory=server.client_factory, settle_seconds=0)
    return gateway.session(gateway.create_session("bench", 3600))


def measure(case: str, source: Path, scratch: Path) -> dict:
    """In a child process: import a tiny image, then time keeping `source` as its original."""
    import numpy as np
    import tifffile

    from app.core.omero.base import ORIGINAL, ORIGINAL_NAMESPACE, Annotations, FileToAttach

    image = scratch / "tiny.ome.tif"
    tifffile.imwrite(image, np.zeros((8, 8), np.uint8))
    with _session(case, scratch) as session:
        gid = session.whoami().default_group_id
        dataset = session.get_or_create_dataset(gid, "bench", "2026-01-01").dataset_id
        (made,) = session.import_image(gid, dataset, [image], name="tiny", description="", annotations=Annotations(),
                                       progress=lambda sent, total: None)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        (stored,) = session.attach_files(gid, [made.id], [FileToAttach(source, source.name, ORIGINAL)],
                                         ORIGINAL_NAMESPACE, lambda sent, total: None)
        os.sync()
        seconds = time.perf_counter() - start
    assert stored.size == source.stat().st_size
    return {"seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "before_mib": before, "sha1": stored.sha1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--json-out", help="also write the rows as JSON here (benchmarks/run.py)")
    parser.add_argument("--case", choices=("embedded", "omeropy"), help=argparse.SUPPRESS)  # the child's part
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure(args.case, args.source, Path(tempfile.mkdtemp(dir=args.source.parent)))))
        return
    work = Path(tempfile.mkdtemp(prefix="portal-bench-"))
    try:
        source = work / "original.emd"
        make_file(source, args.size_mib << 20)
        baseline = time_cp(source, work / "copy.emd")
        measured = {}
        for case in ("embedded", "omeropy"):
            child = subprocess.run([sys.executable, __file__, "--case", case, "--source", str(source)],
                                   capture_output=True, text=True)
            if child.returncode != 0:
                last = (child.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"{case}: not measured ({last})")
                continue
            measured[case] = json.loads(child.stdout.strip().splitlines()[-1])
        baseline = min(baseline, time_cp(source, work / "copy.emd"))
        mib = args.size_mib
        print(f"{'what':<40}{'seconds':>9}{'MiB/s':>9}{'ratio':>8}{'peak RSS MiB':>14}")
        print(f"{'cp (baseline, best of 2)':<40}{baseline:>9.2f}{mib / baseline:>9.0f}{1:>8.2f}")
        labels = {"embedded": "embedded store (copy + SHA-1)", "omeropy": "omero-py RawFileStore, fake server"}
        rows = []
        for case, got in measured.items():
            ratio = got["seconds"] / baseline
            print(f"{labels[case]:<40}{got['seconds']:>9.2f}{mib / got['seconds']:>9.0f}{ratio:>8.2f}"
                  f"{got['peak_mib']:>14.0f}   (before storing: {got['before_mib']:.0f} MiB)")
            rows.append({"case": f"{case}, {mib} MiB", "ratio": ratio, "baseline": "cp",
                         "goal": "-",
                         "note": f"peak RSS {got['peak_mib']:.0f} MiB (goal < 200)"})
        results.write(args.json_out, "keep_original", rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
