"""E-mail when a long import ends (asked per import, remembered per user) and staff's daily digest of
failed jobs, through a real local SMTP server (aiosmtpd), as the retention reminders are tested."""
from datetime import timedelta

import sqlalchemy as sa

from app.core.db import utcnow
from app.core.models import Batch, Job, User
from tests.helpers import ROOT, Portal, make_staff, ome_tiff
from workers import pipeline, tasks

PORTAL = "https://portal.example.org"


def mail_settings(app, smtp, monkeypatch):
    controller, _ = smtp
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=controller.port, MAIL_FROM="portal@facility.example",
                      PORTAL_URL=PORTAL, NOTIFY_AFTER_MINUTES=5.0)
    monkeypatch.setattr(tasks, "_services", lambda: app.extensions["services"])  # what the worker holds
    with app.extensions["services"].db.session() as db:
        db.execute(sa.update(User).values(email=User.username + "@lab.example"))
        db.commit()


def run_all(app, batch):
    with app.app_context():
        for job in batch["jobs"]:
            if job["state"] == "uploading":
                pipeline.run_job(app.extensions["services"], job["id"], "w:1")


def started_minutes_ago(app, batch_id, minutes):
    with app.extensions["services"].db.session() as db:
        db.execute(sa.update(Batch).where(Batch.id == batch_id).values(created_at=utcnow() - timedelta(minutes=minutes)))
        db.commit()


def test_a_long_import_tells_its_owner_once_with_counts_what_to_check_and_links(embedded_app, smtp, monkeypatch):
    _, inbox = smtp
    alice = Portal(embedded_app.test_client(), "alice")
    mail_settings(embedded_app, smtp, monkeypatch)
    me = alice.get("/api/me").get_json()
    assert (me["notify_imports"], me["can_notify"], me["notify_after_minutes"]) == (False, True, 5.0)
    long = alice.send({"run/good.ome.tif": ome_tiff(seed=51, microscope="Talos L120C", acquired="2024-06-01T10:00:00+00:00"),
                       "run/check.ome.tif": ome_tiff(seed=52), "run/broken.tif": b"II*\x00" + b"\xff" * 64}, notify=True)
    quick = alice.send({"quick.ome.tif": ome_tiff(seed=53)}, notify=True)
    assert alice.get("/api/me").get_json()["notify_imports"] is True  # remembered for the next import
    assert tasks.import_notices.run() == 0  # nothing has ended yet
    run_all(embedded_app, long)
    run_all(embedded_app, quick)
    started_minutes_ago(embedded_app, long["id"], 12)  # the long one took twelve minutes; the quick one seconds

    assert tasks.import_notices.run() == 1
    assert tasks.import_notices.run() == 0  # once
    (mail,) = inbox.messages
    ARTIFACTS = ROOT / "test-artifacts"
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "import-notice.eml").write_bytes(mail.as_bytes())  # as the SMTP server received it
    assert (mail["To"], mail["From"]) == ("alice@lab.example", "portal@facility.example")
    # both imported files lack a pixel size (the generated OME-TIFFs carry none); the subject as a reader sees it, unfolded
    assert mail["Subject"] == "Import finished: 2 imported (2 to check), 1 failed"
    text = mail.get_payload(decode=True).decode()
    assert "ended after 12 minutes" in text and "into group Lab" in text
    assert "2 imported (2 to check), 0 already in OMERO, 1 failed." in text
    assert "run/check.ome.tif: acquisition date unknown, microscope unknown, pixel size unknown" in text
    assert "run/broken.tif: broken.tif is truncated" in text
    with embedded_app.extensions["services"].db.session() as db:
        links = db.scalars(sa.select(Job.link).where(Job.batch_id == long["id"], Job.link.is_not(None))).all()
        assert all(db.get(Batch, b).notified_at for b in (long["id"], quick["id"]))  # the quick one: nothing to say
    assert len(links) == 2 and all(f"{PORTAL}{link}" in text for link in links)
    assert f"{PORTAL}/history" in text

    alice.send({"later.ome.tif": ome_tiff(seed=54)}, notify=False)
    assert alice.get("/api/me").get_json()["notify_imports"] is False


def test_staff_who_ask_get_a_daily_digest_of_failed_jobs(embedded_app, smtp, monkeypatch):
    _, inbox = smtp
    alice, sam, tess = (Portal(embedded_app.test_client(), name) for name in ("alice", "sam", "tess"))
    for name in ("sam", "tess"):
        make_staff(embedded_app, name)
    mail_settings(embedded_app, smtp, monkeypatch)
    assert tasks.failure_digests.run() == 0  # no failure: no e-mail
    page = sam.get("/staff").get_data(as_text=True)
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    assert sam.client.post("/staff/digest", data={"digest": "on", "csrf_token": token}).status_code == 303
    assert 'name="digest" checked' in sam.get("/staff").get_data(as_text=True)
    batch = alice.send({"broken.tif": b"II*\x00" + b"\xff" * 64, "fine.ome.tif": ome_tiff(seed=55)})
    run_all(embedded_app, batch)
    failed = next(job["id"] for job in batch["jobs"] if job["files"][0]["name"] == "broken.tif")

    assert tasks.failure_digests.run() == 1  # sam asked; tess did not
    (mail,) = inbox.messages
    assert mail["To"] == "sam@lab.example" and mail["Subject"] == "1 job failed in the last 24 hours"
    text = mail.get_payload(decode=True).decode()
    assert f"job {failed}, alice: broken.tif" in text and f"{PORTAL}/staff/jobs/{failed}" in text
    assert "fine.ome.tif" not in text
