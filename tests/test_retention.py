"""Retention reminders through a real local SMTP server, the user's notice and the staff list."""
from datetime import timedelta

import sqlalchemy as sa

from app.core.db import utcnow
from app.core.models import Job, User
from tests.helpers import Portal, ome_tiff
from workers import pipeline


def test_old_imports_trigger_one_reminder_a_week_and_a_notice(embedded_app, smtp, monkeypatch):
    controller, inbox = smtp
    embedded_app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=controller.port, MAIL_FROM="portal@facility.example")
    alice, bob = Portal(embedded_app.test_client(), "alice"), Portal(embedded_app.test_client(), "bob")
    for who, seed in ((alice, 1), (bob, 2)):
        job_id = who.send({f"run/{seed}.ome.tif": ome_tiff(seed=seed)})["jobs"][0]["id"]
        with embedded_app.app_context():
            assert pipeline.run_job(embedded_app.extensions["services"], job_id, "w:1") == "imported"
    with embedded_app.extensions["services"].db.session() as db:
        db.execute(sa.update(User).values(email=User.username + "@lab.example"))
        alice_id = db.scalar(sa.select(User.id).where(User.username == "alice"))
        db.execute(sa.update(Job).where(Job.owner_id == alice_id).values(finished_at=utcnow() - timedelta(days=30)))
        db.commit()

    assert "retention-notice" not in bob.get("/").get_data(as_text=True)
    page = alice.get("/").get_data(as_text=True)
    assert "1 image went into OMERO more than 28 days ago" in page and "Download" in page and "Delete" in page
    link = app_link(embedded_app, "alice")
    assert f'<a href="{link}" target="_blank" rel="noopener">run/1.ome.tif</a>' in page

    from workers import tasks

    monkeypatch.setattr(tasks, "_services", lambda: embedded_app.extensions["services"])  # what the worker holds
    assert tasks.retention_reminders.run() == 1
    assert tasks.retention_reminders.run() == 0  # not again within a week
    (mail,) = inbox.messages
    assert mail["To"] == "alice@lab.example" and mail["From"] == "portal@facility.example"
    assert "run/1.ome.tif" in mail.get_payload() and "deletes nothing" in mail.get_payload()
    assert link in mail.get_payload() and mail["Subject"] == "1 image in OMERO for more than 28 days"
    assert embedded_app.extensions["celery"].conf.beat_schedule["retention-reminders"]["task"] == \
        "portal.retention_reminders"


def test_staff_see_who_must_clean_up_and_users_cannot(embedded_app):
    alice, sam = Portal(embedded_app.test_client(), "alice"), Portal(embedded_app.test_client(), "sam")
    with embedded_app.extensions["services"].db.session() as db:
        db.execute(sa.update(User).where(User.username == "sam").values(is_staff=True))
        db.commit()
    job_id = alice.send({"a.ome.tif": ome_tiff(seed=3)})["jobs"][0]["id"]
    with embedded_app.app_context():
        pipeline.run_job(embedded_app.extensions["services"], job_id, "w:1")
    with embedded_app.extensions["services"].db.session() as db:
        db.execute(sa.update(Job).values(finished_at=utcnow() - timedelta(days=40)))
        db.commit()
    page = sam.get("/staff/retention").get_data(as_text=True)
    assert "alice" in page and "never" in page
    assert alice.get("/staff/retention").status_code == 403
    assert sam.client.post("/staff/retention/remind").status_code == 400  # CSRF


def app_link(app, username):
    with app.extensions["services"].db.session() as db:
        return db.scalar(sa.select(Job.link).join(User, User.id == Job.owner_id).where(User.username == username))
