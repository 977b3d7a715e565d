"""Staging hygiene: the bytes of failed, cancelled and never-completed jobs leave the transfer server
after PORTAL_STAGING_KEEP_DAYS (the daily task) or when staff free them; the owner is told."""
from datetime import timedelta

import sqlalchemy as sa

from app.core.db import utcnow
from app.core.models import Job, User
from tests.helpers import Portal, ome_tiff
from workers import pipeline


def job_row(app, job_id):
    with app.extensions["services"].db.session() as db:
        return db.get(Job, job_id)


def staged(app, job_id) -> bool:
    return app.extensions["services"].staging.job_dir(job_id).exists()


def age(app, job_ids, days):
    with app.extensions["services"].db.session() as db:
        then = utcnow() - timedelta(days=days)
        db.execute(sa.update(Job).where(Job.id.in_(job_ids)).values(created_at=then, finished_at=then))
        db.commit()


def test_the_daily_task_frees_old_failed_cancelled_and_abandoned_jobs_and_says_so(embedded_app, monkeypatch):
    app = embedded_app
    alice = Portal(app.test_client(), "alice")
    old_failed, recent_failed, cancelled = (j["id"] for j in alice.send(
        {"a.ome.tif": ome_tiff(seed=1), "b.ome.tif": ome_tiff(seed=2), "c.ome.tif": ome_tiff(seed=3)})["jobs"])
    abandoned = alice.new_batch({"d.ome.tif": ome_tiff(seed=4)})["jobs"][0]
    assert alice.put(f"/api/files/{abandoned['files'][0]['id']}?offset=0", data=b"II*\x00").status_code == 200
    with app.extensions["services"].db.session() as db:  # the session expired: failures Retry could fix
        db.execute(sa.update(User).values(omero_key=None))
        db.commit()
    with app.app_context():
        assert pipeline.run_job(app.extensions["services"], old_failed, "w:1") == pipeline.run_job(app.extensions["services"], recent_failed, "w:1") == "failed"
    assert alice.post(f"/api/jobs/{cancelled}/cancel").status_code == 200
    app.extensions["services"].staging.job_dir(cancelled).mkdir()  # e.g. a worker's leftovers after a staff cancel
    (app.extensions["services"].staging.job_dir(cancelled) / "converted").write_bytes(b"x" * 10)
    age(app, [old_failed, cancelled, abandoned["id"]], days=15)
    age(app, [recent_failed], days=13)
    assert all(staged(app, j) for j in (old_failed, recent_failed, cancelled, abandoned["id"]))

    from workers import tasks

    monkeypatch.setattr(tasks, "_services", lambda: app.extensions["services"])  # what the worker holds
    assert tasks.free_staging.run() > len(ome_tiff(seed=1))
    assert [staged(app, j) for j in (old_failed, recent_failed, cancelled, abandoned["id"])] == [False, True, False, False]
    batch = alice.get(f"/api/batches/{job_row(app, old_failed).batch_id}").get_json()
    told = {job["id"]: job for job in batch["jobs"]}
    assert "removed from the transfer server (kept 14 days)" in told[old_failed]["message"]
    assert "sign in again" in told[old_failed]["message"]  # the reason it failed stays
    assert told[old_failed]["can_retry"] is False and told[recent_failed]["can_retry"] is True
    assert alice.post(f"/api/jobs/{old_failed}/retry").status_code == 409
    gone = job_row(app, abandoned["id"])
    assert gone.state == "failed" and gone.message.startswith("Not sent completely")
    assert app.extensions["celery"].conf.beat_schedule["staging-hygiene"]["task"] == "portal.free_staging"


def test_staff_see_staging_use_and_free_a_jobs_bytes_now(embedded_app):
    app = embedded_app
    alice, sam = Portal(app.test_client(), "alice"), Portal(app.test_client(), "sam")
    with app.extensions["services"].db.session() as db:
        db.execute(sa.update(User).where(User.username == "sam").values(is_staff=True))
        db.commit()
    data = ome_tiff(seed=5)
    job_id = alice.send({"e.ome.tif": data})["jobs"][0]["id"]
    assert f"staging holds <strong id=\"staged\">{len(data)} bytes</strong>" in sam.get("/staff").get_data(as_text=True)
    refused = sam.post(f"/api/staff/jobs/{job_id}/free")  # queued: its bytes are still needed
    assert refused.status_code == 409 and staged(app, job_id)
    with app.extensions["services"].db.session() as db:
        db.execute(sa.update(User).values(omero_key=None))
        db.commit()
    with app.app_context():
        assert pipeline.run_job(app.extensions["services"], job_id, "w:1") == "failed"
    (listed,) = sam.get("/api/staff/jobs?state=failed").get_json()["jobs"]
    assert listed["staged"] is True
    freed = sam.post(f"/api/staff/jobs/{job_id}/free").get_json()
    assert freed["freed_bytes"] == len(data) and not staged(app, job_id)
    assert "freed by the facility staff" in freed["message"] and freed["can_retry"] is False
    assert alice.post(f"/api/staff/jobs/{job_id}/free").status_code == 403
