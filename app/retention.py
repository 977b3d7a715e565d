"""Retention: files imported more than RETENTION_DAYS ago are safely in OMERO and must leave the
transfer server. Users are told on their page and, at most every REMINDER_EVERY_DAYS, by e-mail.
Nothing is ever deleted by the portal."""
from __future__ import annotations

import logging
import smtplib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage

from flask import Flask
from sqlalchemy import select

from app.db import utcnow
from app.models import Job, JobFile, JobState, User

log = logging.getLogger(__name__)


@dataclass
class Due:
    user: User
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    oldest: object = None  # datetime of the oldest import


def due(db, days: int, owner_id: int | None = None) -> list[Due]:
    """Per user: the files imported more than `days` days ago."""
    query = (select(User, JobFile.name, JobFile.size, Job.finished_at).join(Job, Job.owner_id == User.id)
             .join(JobFile, JobFile.job_id == Job.id)
             .where(Job.state == JobState.IMPORTED, Job.finished_at < utcnow() - timedelta(days=days))
             .order_by(User.username, Job.finished_at))
    if owner_id is not None:
        query = query.where(User.id == owner_id)
    result: dict[int, Due] = defaultdict(lambda: None)
    for user, name, size, finished in db.execute(query):
        entry = result[user.id] or Due(user, oldest=finished)
        entry.files.append(name)
        entry.bytes += size
        result[user.id] = entry
    return list(result.values())


def reminder(entry: Due, days: int, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"] = sender, entry.user.email
    message["Subject"] = f"{len(entry.files)} files imported into OMERO more than {days} days ago"
    listed = "\n".join(f"  {name}" for name in entry.files[:200])
    more = f"\n  ... and {len(entry.files) - 200} more" if len(entry.files) > 200 else ""
    message.set_content(
        f"Hello {entry.user.full_name or entry.user.username},\n\n"
        f"these files went into OMERO through the upload portal more than {days} days ago. OMERO holds\n"
        f"them, checked by checksum. Please delete your copies from the transfer server: data must leave\n"
        f"it within {days} days. The portal deletes nothing itself.\n\n{listed}{more}\n"
    )
    return message


def send_reminders(app: Flask) -> int:
    """E-mail every user with files past the retention time who was not reminded lately."""
    config = app.config
    if not config["SMTP_HOST"]:
        return 0
    days, sent = config["RETENTION_DAYS"], 0
    quiet_since = utcnow() - timedelta(days=config["REMINDER_EVERY_DAYS"])
    with app.extensions["db"].session() as db:
        for entry in due(db, days):
            user = entry.user
            if not user.email or (user.reminded_at and user.reminded_at > quiet_since):
                continue
            try:
                with smtplib.SMTP(config["SMTP_HOST"], config["SMTP_PORT"], timeout=30) as smtp:
                    if config["SMTP_USER"]:
                        smtp.starttls()
                        smtp.login(config["SMTP_USER"], config["SMTP_PASSWORD"])
                    smtp.send_message(reminder(entry, days, config["MAIL_FROM"]))
            except (OSError, smtplib.SMTPException) as e:
                log.warning("retention reminder to user %s not sent: %s", user.id, e)
                continue
            user.reminded_at = utcnow()
            db.commit()
            sent += 1
    return sent
