"""A conversion that can be stopped: each runs in a child process under the facility's time and
memory limits, so a file that is too slow or too big to convert ends as a failed job (staff see which
limit stopped it) and frees its slot; Cancel kills a running conversion at once.

The inputs are real, valid files of a few KB that are genuinely costly to convert: a Thermo/FEI SEM
TIFF whose zstd-compressed 8000x8000 image (64 MB of pixels, inside the decompression-bomb guard)
takes seconds and a 64 MB decode to convert."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
import tifffile

from app.core.models import Job
from tests.helpers import Portal, child_pids, costly_sem_tiff, job_row, make_staff, ome_tiff, run_job
from workers import limits, pipeline


@pytest.fixture
def limited(configured_app):
    """An embedded portal with the limits the test sets: limited(CONVERT_TIME_LIMIT="0.5")."""
    return lambda **settings: configured_app(PORTAL_CONVERT_TIME_PER_GIB="0", **{f"PORTAL_{k}": v for k, v in settings.items()})


@pytest.mark.parametrize("limit, settings, said", [
    # 50 ms: far less than decoding and writing its 64 MB of pixels takes on any machine (0.5 s was not)
    ("time", {"CONVERT_TIME_LIMIT": "0.05"}, r"^Converting costly\.tif stopped after 0\.05 s, the longest a conversion of its size may take here"),
    ("memory", {"CONVERT_MEMORY_LIMIT": str(16 << 20)},  # 32 MiB: the banded conversion sometimes fit
     r"^Converting costly\.tif stopped: it needed more than the 16\.8 MB of memory a conversion may use here"),
])
def test_a_conversion_past_its_limit_fails_plainly_frees_its_slot_and_staff_see_it(limited, limit, settings, said):
    import re

    app = limited(**settings)
    alice, sam = Portal(app.test_client(), "alice"), Portal(app.test_client(), "sam")
    make_staff(app, "sam")
    costly, small = (job["id"] for job in alice.send({"costly.tif": costly_sem_tiff(), "small.ome.tif": ome_tiff(seed=1)})["jobs"])
    assert run_job(app, costly) == "failed"
    row = job_row(app, costly)
    assert re.search(said, row.message), row.message
    assert row.limit_hit == limit and row.can_retry is False and f"{limit} limit" in row.detail
    assert child_pids() == []  # the conversion's process is gone
    app.extensions["services"].config.update(CONVERT_TIME_LIMIT=600.0, CONVERT_MEMORY_LIMIT=1 << 30)
    assert run_job(app, small) == "imported", job_row(app, small).message  # the same process takes the next job
    (listed,) = sam.get("/api/staff/jobs?state=limit").get_json()["jobs"]
    assert listed["id"] == costly and listed["limit_hit"] == limit
    assert f"exceeded the {limit} limit" in sam.get(f"/staff/jobs/{costly}").get_data(as_text=True)


def test_within_its_limits_the_same_file_converts(limited):
    app = limited(CONVERT_TIME_LIMIT="600", CONVERT_MEMORY_LIMIT=str(1 << 30))
    alice = Portal(app.test_client(), "alice")
    job_id = alice.send({"costly.tif": costly_sem_tiff()})["jobs"][0]["id"]
    assert run_job(app, job_id) == "imported"
    (image,) = app.extensions["services"].omero.images_of("alice")
    with tifffile.TiffFile(app.extensions["services"].omero.root / image["path"] / "costly.ome.tiff") as tif:
        assert tif.pages.first.shape == (7971, 8000)  # the data bar (29 rows) cropped, as the sample's header says


@pytest.mark.parametrize("by", ["owner", "staff"])
def test_cancel_kills_a_running_conversion(limited, monkeypatch, by):
    """Cancelled while the child converts (asked at its first look at the job, 10 ms in, seconds before
    it could end): the child is killed, the job ends cancelled, and its staged bytes go."""
    app = limited(CONVERT_TIME_LIMIT="600")
    alice, sam = Portal(app.test_client(), "alice"), Portal(app.test_client(), "sam")
    make_staff(app, "sam")
    job_id = alice.send({"costly.tif": costly_sem_tiff()})["jobs"][0]["id"]
    monkeypatch.setattr(limits, "POLL_SECONDS", 0.01)
    children, real_check = [], pipeline.Run.check

    def cancel_at_first_look(self):
        if not children:
            children.extend(child_pids())
            who = alice.post(f"/api/jobs/{job_id}/cancel") if by == "owner" else sam.post(f"/api/staff/jobs/{job_id}/cancel")
            assert who.get_json()["state"] == "cancelled"
        real_check(self)

    monkeypatch.setattr(pipeline.Run, "check", cancel_at_first_look)
    assert run_job(app, job_id) == "cancelled"
    assert len(children) == 1 and child_pids() == []  # it was converting, and it is gone
    assert job_row(app, job_id).state == "cancelled" and job_row(app, job_id).limit_hit is None
    assert not app.extensions["services"].staging.job_dir(job_id).exists()
    assert app.extensions["services"].omero.images_of("alice") == []
    with app.extensions["services"].db.session() as db:
        assert db.scalar(sa.select(Job.state).where(Job.id == job_id)) == "cancelled"


def test_a_conversion_dies_with_its_worker(tmp_path):
    """A worker process killed outright (SIGKILL, the OOM killer) takes its conversion with it: no
    orphan goes on converting, holding memory and the disk. The property is the processes' lifetime,
    so the conversion here is one that never ends by itself (a reader stuck in a loop)."""
    import signal
    import subprocess
    import sys

    from tests.helpers import wait_until

    script = (
        "import time\n"
        "from pathlib import Path\n"
        "import converters\n"
        "from converters.base import ConvertOptions\n"
        "from workers import limits\n"
        "from tests.helpers import child_pids\n"
        "converters.convert = lambda *args: time.sleep(3600)\n"
        "limits.POLL_SECONDS = 0.01\n"
        "def tell():\n"
        "    print(*child_pids(), flush=True)\n"
        "    time.sleep(3600)\n"  # busy when it is killed
        f"limits.convert([Path('x.tif')], Path({str(tmp_path)!r}), ConvertOptions(), limits.Limits(600, 1 << 30), tell)\n")
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    with worker.stdout:
        (child,) = map(int, worker.stdout.readline().split())
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)

    def gone():
        try:
            with open(f"/proc/{child}/status") as f:
                return "\nState:\tZ" in f.read()  # a zombie has stopped; only its exit status is left
        except FileNotFoundError:
            return True

    wait_until(gone, timeout=30, what="the conversion to stop with its worker")


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_a_celery_worker_stops_a_conversion_past_its_limit_and_takes_the_next_job(app, portal, worker, stack):
    """The same through a real worker with one slot: the costly file fails at the memory limit, and
    the small file queued behind it is imported by the same slot."""
    from tests.helpers import wait_until

    worker.env = stack | {"PORTAL_CONVERT_MEMORY_LIMIT": str(32 << 20), "PORTAL_WORKER_CONCURRENCY": "1"}
    alice = portal("alice")
    costly, small = (job["id"] for job in alice.send({"costly.tif": costly_sem_tiff(), "small.ome.tif": ome_tiff(seed=2)})["jobs"])
    worker.start()
    wait_until(lambda: job_row(app, small).state in ("imported", "failed"), timeout=120, what="the small file's job")
    assert (job_row(app, costly).state, job_row(app, costly).limit_hit) == ("failed", "memory")
    assert job_row(app, small).state == "imported", job_row(app, small).message
