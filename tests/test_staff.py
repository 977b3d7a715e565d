"""The staff view: acting on jobs through the real pipeline, workers, usage. Who may call each staff
endpoint: tests/test_authz_matrix.py."""
import csv
import io

import pytest
import sqlalchemy as sa

from app.core.models import Job, User
from tests.helpers import SAMPLES, Portal, make_staff, ome_tiff, wait_until
from workers import pipeline


@pytest.fixture
def people(app):
    alice, staff = Portal(app.test_client(), "alice"), Portal(app.test_client(), "sam")
    make_staff(app, "sam")
    return alice, staff


def job_row(app, job_id):
    with app.extensions["services"].db.session() as db:
        return db.get(Job, job_id)


def test_staff_find_the_imports_to_check(app, people):
    """Imported with warnings (here: a Berkeley EMD without date or microscope) is its own filter."""
    alice, staff = people
    names = ("Camera Ceta Imaging Micro.emd", "berkeley_example_image.emd")
    jobs = alice.send({name: (SAMPLES / name).read_bytes() for name in names})["jobs"]
    with app.app_context():
        for job in jobs:
            assert pipeline.run_job(app.extensions["services"], job["id"], "w:1") == "imported"
    listed = staff.get("/api/staff/jobs?state=check").get_json()["jobs"]
    assert [j["id"] for j in listed] == [jobs[1]["id"]] and "acquisition date unknown" in listed[0]["message"]
    assert len(staff.get("/api/staff/jobs?state=imported").get_json()["jobs"]) == 2
    assert 'value="check"' in staff.get("/staff").get_data(as_text=True)


def test_the_staff_job_page_lists_every_image_of_a_multi_series_import(app, people):
    alice, staff = people
    name = "S3_1Pos_2Mosaic_T1_Z1_CH1.czi"
    (job,) = alice.send({name: (SAMPLES / name).read_bytes()})["jobs"]
    with app.app_context():
        assert pipeline.run_job(app.extensions["services"], job["id"], "w:1") == "imported"
    page = staff.get(f"/staff/jobs/{job['id']}").get_data(as_text=True)
    for scene in ("TR1", "P1", "TR2"):  # each scene of the CZI is an image of its own
        assert f"{name} [{scene}]</a>" in page
    (listed,) = staff.get("/api/staff/jobs").get_json()["jobs"]
    assert [i["name"] for i in listed["images"]] == [f"{name} [{scene}]" for scene in ("TR1", "P1", "TR2")]


def test_staff_see_every_users_jobs_with_filters_and_a_failure_with_its_diagnostics(app, people, monkeypatch):
    alice, staff = people
    bob = Portal(app.test_client(), "bob")
    alice.send({"a.ome.tif": ome_tiff(seed=1)})
    broken = bob.send({"b.ome.tif": ome_tiff(seed=2)})["jobs"][0]["id"]

    def bug(*_a, **_k):
        raise KeyError("a bug in the portal")

    monkeypatch.setattr(pipeline, "_import", bug)
    with app.app_context():
        assert pipeline.run_job(app.extensions["services"], broken, "node@host:1") == "failed"
    everyone = staff.get("/api/staff/jobs").get_json()["jobs"]
    assert {j["user"] for j in everyone} == {"alice", "bob"}
    (failed,) = staff.get("/api/staff/jobs?state=failed").get_json()["jobs"]
    assert failed["user"] == "bob" and "internal error" in failed["message"]
    assert "KeyError: 'a bug in the portal'" in failed["detail"]
    assert [j["user"] for j in staff.get("/api/staff/jobs?user=alice").get_json()["jobs"]] == ["alice"]
    page = staff.get(f"/staff/jobs/{broken}").get_data(as_text=True)
    assert "KeyError" in page and "queued" in page
    assert "KeyError" not in bob.get(f"/api/batches/{job_row(app, broken).batch_id}").get_data(as_text=True)


def test_staff_retry_a_failed_job_after_the_user_signs_in_again(app, people):
    alice, staff = people
    job_id = alice.send({"a.ome.tif": ome_tiff(seed=3)})["jobs"][0]["id"]
    with app.extensions["services"].db.session() as db:  # the user's OMERO session is gone
        db.execute(sa.update(User).where(User.username == "alice").values(omero_key=None))
        db.commit()
    with app.app_context():
        assert pipeline.run_job(app.extensions["services"], job_id, "w:1") == "failed"
    assert "sign in again" in job_row(app, job_id).message
    Portal(app.test_client(), "alice")  # signs in again: a fresh key
    assert staff.post(f"/api/staff/jobs/{job_id}/retry").get_json()["state"] == "queued"
    with app.app_context():
        assert pipeline.run_job(app.extensions["services"], job_id, "w:1") == "imported"


@pytest.mark.parametrize("by", ["owner", "staff"])
def test_the_owner_or_staff_cancel_a_running_job_and_its_worker_stops_at_the_next_step(app, people, by):
    alice, staff = people
    job_id = alice.send({"a.ome.tif": ome_tiff(seed=4)})["jobs"][0]["id"]
    from app.core import jobs as job_states

    with app.extensions["services"].db.session() as db:
        job = job_states.claim(db, job_id, "node@host:7", 60)
        job.batch, job.files  # noqa: B018 - loaded while the session is open
    run = pipeline.Run(app.extensions["services"], job, "node@host:7")
    run.update(state="converting")
    cancel = alice.post(f"/api/jobs/{job_id}/cancel") if by == "owner" else staff.post(f"/api/staff/jobs/{job_id}/cancel")
    assert cancel.get_json()["state"] == "cancelled"
    with pytest.raises(job_states.Cancelled):
        run.check()
    with pytest.raises(job_states.Cancelled):
        run.update(state="importing")
    assert job_row(app, job_id).state == "cancelled"
    assert staff.post(f"/api/staff/jobs/{job_id}/front").status_code == 409
    assert alice.post(f"/api/jobs/{job_id}/cancel").status_code == 409  # ended: nothing left to cancel


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_move_to_front_runs_that_job_next(app, people, worker):
    alice, staff = people
    ids = [alice.send({f"{i}.ome.tif": ome_tiff(seed=10 + i)})["jobs"][0]["id"] for i in range(4)]
    assert staff.post(f"/api/staff/jobs/{ids[-1]}/front").status_code == 200
    worker.env = worker.env | {"PORTAL_WORKER_CONCURRENCY": "1"}
    worker.start()
    wait_until(lambda: all(job_row(app, i).state == "imported" for i in ids), timeout=120, what="all imports")
    started = sorted(ids, key=lambda i: job_row(app, i).started_at)
    assert started[0] == ids[-1]


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_workers_online_then_an_alarm_when_the_last_one_dies(app, people, worker):
    _, staff = people
    assert staff.get("/api/staff/status").get_json()["alarm"]
    worker.start()
    status = wait_until(lambda: (s := staff.get("/api/staff/status").get_json())["online"] == 1 and s,
                        timeout=60, what="the worker's first heartbeat")
    assert status["alarm"] is None and status["workers"][0]["concurrency"] == 2
    worker.kill()
    wait_until(lambda: staff.get("/api/staff/status").get_json()["alarm"], timeout=60, what="the alarm (a worker is offline after 30 s of silence)")
    assert "No worker is online" in staff.get("/staff").get_data(as_text=True)


def test_usage_tables_csv_and_metrics_count_the_imports(app, people, monkeypatch):
    alice, staff = people
    for seed in (20, 21):
        job_id = alice.send({f"{seed}.ome.tif": ome_tiff(seed=seed, microscope="Krios <G4>")})["jobs"][0]["id"]
        with app.app_context():
            pipeline.run_job(app.extensions["services"], job_id, "w:1")
    page = staff.get("/staff/usage").get_data(as_text=True)
    assert "<svg" in page and "Krios &lt;G4&gt;" in page and "<G4>" not in page
    rows = list(csv.DictReader(io.StringIO(staff.get("/staff/usage.csv").get_data(as_text=True))))
    assert [(r["microscope"], r["user"], r["files"]) for r in rows] == [("Krios <G4>", "alice", "1")] * 2
    metrics = staff.get("/metrics").get_data(as_text=True)
    assert 'portal_jobs{state="imported"} 2' in metrics and "portal_job_duration_seconds_count 2" in metrics
    app.config["METRICS_TOKEN"] = "scrape-me"
    scraper = app.test_client()
    assert scraper.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert scraper.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).status_code == 200


def test_staff_import_as_a_user_whose_images_they_become(app, people):
    alice, staff = people
    data = ome_tiff(seed=30)
    body = {"on_behalf_of": "carol", "group_id": None, "files": [{"name": "c.ome.tif", "size": len(data)}]}
    assert alice.post("/api/staff/batches", json=body).status_code == 403
    refused = staff.post("/api/staff/batches", json=body)  # group_id None: not one of carol's groups
    assert refused.status_code == 400 and "OMERO groups" in refused.get_json()["error"]

    carol = Portal(app.test_client(), "carol")  # to learn carol's group ids
    body["group_id"] = carol.me["groups"][1]["id"]
    batch = staff.post("/api/staff/batches", json=body).get_json()
    file_id = batch["jobs"][0]["files"][0]["id"]
    assert staff.put(f"/api/files/{file_id}?offset=0", data=data).status_code == 200
    import hashlib

    staff.post(f"/api/files/{file_id}/complete", json={"sha1": hashlib.sha1(data).hexdigest()})
    with app.app_context():
        assert pipeline.run_job(app.extensions["services"], batch["jobs"][0]["id"], "w:1") == "imported"
    (image,) = app.extensions["services"].omero.images_of("carol")
    assert image["group"] == carol.me["groups"][1]["name"]
    assert app.extensions["services"].omero.images_of("sam") == []
    mine = carol.get(f"/api/batches/{batch['id']}").get_json()
    assert mine["owner_id"] != mine["created_by_id"] and mine["jobs"][0]["state"] == "imported"
    assert alice.get(f"/api/batches/{batch['id']}").status_code == 404


BROKEN_TIFF = b"II*\x00" + bytes(64)  # a TIFF header and nothing readable: a failure of the content


def test_retry_is_offered_only_where_it_can_work(embedded_app):
    app = embedded_app
    alice, staff = Portal(app.test_client(), "alice"), Portal(app.test_client(), "sam")
    make_staff(app, "sam")
    fine, broken = (job["id"] for job in alice.send({"broken.tif": BROKEN_TIFF, "a.ome.tif": ome_tiff(seed=40)})["jobs"])
    with app.extensions["services"].db.session() as db:  # the user's OMERO session is gone: that can be retried
        db.execute(sa.update(User).where(User.username == "alice").values(omero_key=None))
        db.commit()
    with app.app_context():
        assert pipeline.run_job(app.extensions["services"], broken, "w:1") == "failed" and pipeline.run_job(app.extensions["services"], fine, "w:1") == "failed"
    listed = {job["id"]: job for job in staff.get("/api/staff/jobs?state=failed").get_json()["jobs"]}
    assert (listed[broken]["can_retry"], listed[fine]["can_retry"]) == (False, True)
    refused = staff.post(f"/api/staff/jobs/{broken}/retry")
    assert refused.status_code == 409 and "Retrying cannot help" in refused.get_json()["error"]
    assert alice.post(f"/api/jobs/{broken}/retry").status_code == 409
    batch = alice.get(f"/api/batches/{job_row(app, broken).batch_id}").get_json()
    assert {job["id"]: job["can_retry"] for job in batch["jobs"]} == {broken: False, fine: True}


def test_move_to_front_is_not_offered_on_the_embedded_broker(embedded_app):
    app = embedded_app
    alice, staff = Portal(app.test_client(), "alice"), Portal(app.test_client(), "sam")
    make_staff(app, "sam")
    job_id = alice.send({"q.ome.tif": ome_tiff(seed=41)})["jobs"][0]["id"]
    queued_since = job_row(app, job_id).enqueued_at
    assert staff.get("/api/staff/status").get_json()["can_move_to_front"] is False
    refused = staff.post(f"/api/staff/jobs/{job_id}/front")
    assert refused.status_code == 409 and "Redis" in refused.get_json()["error"]
    assert job_row(app, job_id).enqueued_at == queued_since  # "oldest waiting" is left alone
    assert 'data-front="false"' in staff.get("/staff").get_data(as_text=True)


def test_a_worker_silent_for_30_s_is_offline(embedded_app):
    from datetime import timedelta

    from app.core.db import utcnow
    from app.core.models import WorkerBeat

    app = embedded_app
    staff = Portal(app.test_client(), "sam")
    make_staff(app, "sam")
    with app.extensions["services"].db.session() as db:
        db.add_all([WorkerBeat(name="fresh@host", last_seen=utcnow() - timedelta(seconds=20)),
                    WorkerBeat(name="gone@host", last_seen=utcnow() - timedelta(seconds=31))])
        db.commit()
    status = staff.get("/api/staff/status").get_json()
    assert {w["name"]: w["online"] for w in status["workers"]} == {"fresh@host": True, "gone@host": False}


def test_import_as_starts_with_the_users_groups(embedded_app):
    app = embedded_app
    alice, staff = Portal(app.test_client(), "alice"), Portal(app.test_client(), "sam")
    make_staff(app, "sam")
    assert alice.post("/api/staff/import-as", json={"on_behalf_of": "carol"}).status_code == 403
    carol = staff.post("/api/staff/import-as", json={"on_behalf_of": "carol"}).get_json()
    assert carol["username"] == "carol" and [g["name"] for g in carol["groups"]] == ["Lab", "Facility"]
    assert staff.post("/api/staff/import-as", json={}).status_code == 400
    page = staff.get("/staff").get_data(as_text=True)
    assert 'id="import-as"' in page and 'name="as"' in page


def test_staff_name_a_microscope_and_the_next_job_lands_in_that_project(embedded_app):
    app = embedded_app
    app.config["MICROSCOPE_NAMES"] = {"TALOS-12TAN18C": "Talos L120C"}  # the settings' starting table
    alice, staff = Portal(app.test_client(), "alice"), Portal(app.test_client(), "sam")
    make_staff(app, "sam")
    first = alice.send({"1.ome.tif": ome_tiff(seed=42, microscope="TITAN52336320")})["jobs"][0]["id"]
    with app.app_context():
        assert pipeline.run_job(app.extensions["services"], first, "w:1") == "imported"
    assert job_row(app, first).project == "TITAN52336320"
    page = staff.get("/staff/microscopes").get_data(as_text=True)
    assert "Talos L120C" in page and "(from the settings)" in page
    assert "TITAN52336320" in unmapped(page)  # offered for naming
    assert alice.post("/staff/microscopes", data={"raw": "TITAN52336320", "name": "Titan Krios"}).status_code == 403
    assert staff.client.post("/staff/microscopes", data={"raw": "TITAN52336320", "name": "x"}).status_code == 400  # CSRF
    saved = staff.post("/staff/microscopes", data={"raw": "TITAN52336320", "name": "Titan Krios"})
    assert saved.status_code == 303
    second = alice.send({"2.ome.tif": ome_tiff(seed=43, microscope="TITAN52336320")})["jobs"][0]["id"]
    with app.app_context():
        assert pipeline.run_job(app.extensions["services"], second, "w:1") == "imported"
    assert (job_row(app, first).project, job_row(app, second).project) == ("TITAN52336320", "Titan Krios")
    (titan,) = [i for i in app.extensions["services"].omero.images_of("alice") if i["project"] == "Titan Krios"]
    page = staff.get("/staff/microscopes").get_data(as_text=True)
    assert "Every instrument seen so far has a name" in page
    assert staff.post("/staff/microscopes", data={"raw": "TITAN52336320", "name": ""}).status_code == 303
    assert "TITAN52336320" in unmapped(staff.get("/staff/microscopes").get_data(as_text=True))


def unmapped(page: str) -> str:
    return page.split('id="microscope-unmapped"')[1]


def test_the_job_page_shows_where_a_failed_import_was_going_a_red_badge_and_its_actions(app, people, monkeypatch):
    from app.core.omero.base import OmeroError
    from app.core.omero.embedded import EmbeddedSession

    alice, staff = people
    data = ome_tiff(seed=14, microscope="Talos L120C", acquired="2024-03-05T10:00:00+00:00")
    job_id = alice.send({"a.ome.tif": data})["jobs"][0]["id"]

    def refused(*args, **kwargs):
        raise OmeroError("the dataset is read-only")
    monkeypatch.setattr(EmbeddedSession, "import_image", refused)
    with app.app_context():
        assert pipeline.run_job(app.extensions["services"], job_id, "w:1") == "failed"
    page = staff.get(f"/staff/jobs/{job_id}").get_data(as_text=True)
    assert "<dd>Talos L120C / 2024-03-05" in page  # where it was going, as its history says
    assert 'class="state state-failed colour-red' in page
    assert '<button type="button" data-action="retry">Retry</button>' in page
    assert 'data-action="cancel"' not in page  # a failed job has ended
    assert '<button type="button" data-action="free">Free its bytes</button>' in page


def test_staff_cancel_during_an_import_stops_it_and_leaves_no_partial_copy(app, people, monkeypatch):
    """The copy into the embedded store is cut at its next block, and its half-written folder in
    incoming/ goes with it (it stayed there forever)."""
    alice, staff = people
    job_id = alice.send({"big.ome.tif": ome_tiff((3072, 4096), seed=5)})["jobs"][0]["id"]  # 12 MiB: 3 blocks
    real_progress = pipeline.Run.progress

    def cancelled_while_importing(run, fraction, message):
        if message.startswith("Importing") and job_row(app, job_id).state == "importing":
            assert staff.post(f"/api/staff/jobs/{job_id}/cancel").get_json()["state"] == "cancelled"
        real_progress(run, fraction, message)

    monkeypatch.setattr(pipeline.Run, "progress", cancelled_while_importing)
    with app.app_context():
        assert pipeline.run_job(app.extensions["services"], job_id, "w:1") == "cancelled"
    store = app.extensions["services"].omero
    assert job_row(app, job_id).state == "cancelled" and store.images_of("alice") == []
    assert list((store.root / "incoming").iterdir()) == []


def test_a_cancel_that_lands_while_a_failure_is_recorded_ends_the_job_quietly(app, people, monkeypatch):
    """The run meets the cancel when it writes the failure (its lease is gone): it returns, no
    LeaseLost escapes the failure handler as a traceback in the worker."""
    alice, staff = people
    job_id = alice.send({"broken.ome.tif": b"II*\x00" + bytes(60)})["jobs"][0]["id"]
    real_finish = pipeline.Run.finish

    def cancelled_first(run, state, message, **changes):
        assert staff.post(f"/api/staff/jobs/{job_id}/cancel").get_json()["state"] == "cancelled"
        return real_finish(run, state, message, **changes)

    monkeypatch.setattr(pipeline.Run, "finish", cancelled_first)
    with app.app_context():
        assert pipeline.run_job(app.extensions["services"], job_id, "w:1") == "cancelled"
    assert job_row(app, job_id).state == "cancelled" and job_row(app, job_id).message == "Cancelled by the facility staff"
