"""E-mail from the portal, all through PORTAL_SMTP_HOST: retention reminders (app.core.retention), the
notice that an import a researcher asked about has ended, and staff's daily digest of failed jobs.

A notice is sent only for an import that took longer than NOTIFY_AFTER_MINUTES (one that ends while
the researcher still watches the page needs none), once: the batch remembers that its end was handled.
The worker's beat looks every minute (workers.tasks), so a job cancelled from the web counts too.
"""
from __future__ import annotations

import logging
import smtplib
from datetime import timedelta
from email.message import EmailMessage

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.core.db import utcnow
from app.core.models import Batch, Job, JobState, User
from app.core.services import Services

log = logging.getLogger(__name__)
DIGEST_HOURS = 24


def send(config: dict, message: EmailMessage) -> bool:
    """Send one message; False (and a log line without the address) when the server refused or is away."""
    try:
        with smtplib.SMTP(config["SMTP_HOST"], config["SMTP_PORT"], timeout=30) as smtp:
            if config["SMTP_USER"]:
                smtp.starttls()
                smtp.login(config["SMTP_USER"], config["SMTP_PASSWORD"])
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as e:
        log.warning("e-mail %r not sent: %s", message["Subject"], e)
        return False
    return True


def _message(config: dict, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = config["MAIL_FROM"], to, subject
    message.set_content(body)
    return message


def _absolute(config: dict, link: str | None) -> str | None:
    """OMERO.web's links are absolute; the embedded store's are the portal's own paths."""
    return f"{config['PORTAL_URL']}{link}" if link and link.startswith("/") else link


def import_notice(config: dict, batch: Batch, owner: User, took: timedelta) -> EmailMessage:
    jobs = batch.jobs
    count = {state: sum(1 for j in jobs if j.state == state) for state in JobState.FINAL}
    to_check = [j for j in jobs if j.state == JobState.IMPORTED and j.warnings]
    parts = [f"{count[JobState.IMPORTED]} imported" + (f" ({len(to_check)} to check)" if to_check else ""),
             f"{count[JobState.DUPLICATE]} already in OMERO", f"{count[JobState.FAILED]} failed"]
    if count[JobState.CANCELLED]:
        parts.append(f"{count[JobState.CANCELLED]} cancelled")
    brief = [part for part in parts if not part.startswith("0 ")]  # the subject stays on one line
    sections = [
        ("To check in OMERO", [f"{j.files[0].name}: {', '.join(j.warnings)}" for j in to_check]),
        ("Failed", [f"{j.files[0].name}: {j.message}" for j in jobs if j.state == JobState.FAILED]),
        ("In OMERO", [f"{j.files[0].name}\n    {_absolute(config, j.link)}" for j in jobs
                      if j.state in (JobState.IMPORTED, JobState.DUPLICATE) and j.link]),
    ]
    body = "".join(f"\n{title}:\n" + "\n".join(f"  {line}" for line in lines[:200]) + "\n"
                   for title, lines in sections if lines)
    minutes = max(1, round(took.total_seconds() / 60))
    return _message(
        config, owner.email, f"Import finished: {', '.join(brief)}",
        f"Hello {owner.full_name or owner.username},\n\n"
        f"your import of {len(jobs)} file group{'s' if len(jobs) != 1 else ''} into group {batch.group_name}\n"
        f"(started {batch.created_at:%Y-%m-%d %H:%M} UTC) ended after {minutes} minutes:\n{', '.join(parts)}.\n"
        f"{body}\nEvery import, with Retry where it can help: {config['PORTAL_URL']}/history\n")


def send_import_notices(services: Services) -> int:
    """Tell each owner who asked that their import ended, when it took a while; return how many were told."""
    config, told = services.config, 0
    wait = timedelta(minutes=config["NOTIFY_AFTER_MINUTES"])
    with services.db.session() as db:
        waiting = db.scalars(select(Batch).where(Batch.notify, Batch.notified_at.is_(None))
                             .options(selectinload(Batch.jobs).selectinload(Job.files))).all()
        for batch in waiting:
            if not batch.jobs or any(job.state not in JobState.FINAL for job in batch.jobs):
                continue
            took = max(job.finished_at or batch.created_at for job in batch.jobs) - batch.created_at
            owner = db.get(User, batch.owner_id)
            if took >= wait and owner.email and config["SMTP_HOST"]:
                if not send(config, import_notice(config, batch, owner, took)):
                    continue  # the next round tries again
                told += 1
            batch.notified_at = utcnow()
            db.commit()
    return told


def send_failure_digests(services: Services) -> int:
    """E-mail the staff who asked for it the jobs that failed in the last day; nothing when none did."""
    config = services.config
    if not config["SMTP_HOST"]:
        return 0
    since = utcnow() - timedelta(hours=DIGEST_HOURS)
    with services.db.session() as db:
        failed = db.execute(select(Job, User.username).join(User, User.id == Job.owner_id)
                            .where(Job.state == JobState.FAILED, Job.finished_at >= since)
                            .options(selectinload(Job.files)).order_by(Job.id)).all()
        staff = db.scalars(select(User).where(User.is_staff, User.failure_digest, User.email != "")).all()
        if not failed:
            return 0
        lines = "\n".join(f"  job {job.id}, {user}: {job.files[0].name if job.files else '?'}\n    {job.message}\n"
                          f"    {config['PORTAL_URL']}/staff/jobs/{job.id}" for job, user in failed[:500])
        subject = f"{len(failed)} job{'s' if len(failed) != 1 else ''} failed in the last {DIGEST_HOURS} hours"
        body = (f"{subject}:\n\n{lines}\n\nThe staff page: {config['PORTAL_URL']}/staff\n"
                "(Turn this e-mail off on the staff page.)\n")
        return sum(send(config, _message(config, person.email, subject, body)) for person in staff)
