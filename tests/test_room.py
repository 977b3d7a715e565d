"""Room on the staging disk is accounted: an accepted batch keeps room for the bytes it has still to
send, and a disk that fills up while converting pauses the job (the worker tries again with back-off,
Retry works too) without losing its files; a file passed through needs no room at all."""
from __future__ import annotations

import hashlib
import shutil

import pytest

from tests.helpers import SAMPLES, Portal, costly_sem_tiff, job_row, run_job
from workers import pipeline


@pytest.fixture
def small(tmpfs, configured_app):
    """An embedded portal whose staging disk is a small tmpfs (1 MiB unless the test says), no reserve kept."""

    def make(size="1m"):
        disk = tmpfs(size)
        return configured_app(PORTAL_STAGING_DIR=str(disk), PORTAL_STAGING_RESERVE="0", PORTAL_JOB_MAX_RETRIES="1"), disk

    return make


def fill(disk, leave: int):
    """Other uploads take all but `leave` bytes of the disk."""
    filler = disk / "other-uploads"
    filler.write_bytes(b"\xff" * (shutil.disk_usage(disk).free - leave))
    return filler


def test_two_batches_that_do_not_both_fit_are_not_both_accepted(small):
    app, disk = small()
    alice = Portal(app.test_client(), "alice")
    size = shutil.disk_usage(disk).free * 2 // 3

    def batch(name):
        return alice.post("/api/batches", json={"group_id": alice.me["groups"][0]["id"],
                                                "files": [{"name": name, "size": size}]})

    first = batch("first.ome.tif")
    assert first.status_code == 201  # no byte sent yet: the disk is as free as before...
    second = batch("second.ome.tif")
    assert second.status_code == 507 and second.get_json()["code"] == "disk_full", second.get_json()
    assert "this batch needs" in second.get_json()["error"]
    # ...and a cancelled batch gives its room back
    assert alice.post(f"/api/jobs/{first.get_json()['jobs'][0]['id']}/cancel").status_code == 200
    assert batch("second.ome.tif").status_code == 201


def test_a_disk_that_fills_while_converting_pauses_the_job_and_keeps_its_files(small):
    app, disk = small("40m")
    alice = Portal(app.test_client(), "alice")
    data = costly_sem_tiff()  # 7 KB that need 16 MB of room while converting (the pyramid's scratch)
    job_id = alice.send({"costly.tif": data})["jobs"][0]["id"]
    filler = fill(disk, leave=24 << 10)  # room to start, not for the output
    assert isinstance(run_job(app, job_id), pipeline.RetryLater)
    paused = job_row(app, job_id)
    assert paused.state == "queued" and paused.lease_owner is None
    assert paused.message.startswith("The transfer server's disk filled while converting costly.tif: trying again in")
    staged = app.extensions["services"].staging
    assert hashlib.sha1(staged.path(job_id, "costly.tif").read_bytes()).hexdigest() == hashlib.sha1(data).hexdigest()
    assert not (staged.job_dir(job_id) / "converted").exists()  # the partial output is gone
    filler.unlink()  # room again: the worker's next try finishes
    assert run_job(app, job_id) == "imported", job_row(app, job_id).message
    assert not staged.job_dir(job_id).exists()


def test_no_room_for_the_output_waits_then_fails_with_retry_offered(small):
    app, disk = small()
    alice = Portal(app.test_client(), "alice")
    data = (SAMPLES / "FEI-Helios-Ebeam-8bits.tif").read_bytes()  # 252 KB, converted (to 7 KB)
    job_id = alice.send({"sem.tif": data})["jobs"][0]["id"]
    filler = fill(disk, leave=0)
    assert isinstance(run_job(app, job_id), pipeline.RetryLater)  # the worker tries again (PORTAL_JOB_MAX_RETRIES=1)...
    assert job_row(app, job_id).message.startswith("The transfer server's disk filled while converting sem.tif")
    assert run_job(app, job_id) == "failed"  # ...then gives up, but the files stay and Retry is offered
    failed = alice.get(f"/api/batches/{job_row(app, job_id).batch_id}").get_json()["jobs"][0]
    assert failed["can_retry"] is True and failed["message"] == "The transfer server's disk filled while converting sem.tif"
    filler.unlink()
    assert alice.post(f"/api/jobs/{job_id}/retry").get_json()["state"] == "queued"
    assert run_job(app, job_id) == "imported"
    (image,) = app.extensions["services"].omero.images_of("alice")
    assert image["name"] == "sem.tif"


def test_a_file_passed_through_needs_no_room_to_convert(small):
    """An OME-TIFF is imported as it is: a disk with no room left beside it does not hold it up."""
    from tests.helpers import ome_tiff

    app, disk = small()
    alice = Portal(app.test_client(), "alice")
    job_id = alice.send({"a.ome.tif": ome_tiff((512, 512), seed=3)})["jobs"][0]["id"]
    fill(disk, leave=0)
    assert run_job(app, job_id) == "imported"
