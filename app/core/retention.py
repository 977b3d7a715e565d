"""Retention: files imported more than RETENTION_DAYS ago are safely in OMERO and must leave the
transfer server. Users are told on their page and, at most every REMINDER_EVERY_DAYS, by e-mail.
The portal never deletes a researcher's originals.

Staging hygiene: the portal's own copies of jobs that will never import (failed, cancelled, never sent
completely) are removed STAGING_KEEP_DAYS after they ended (the daily task), or now by staff; the owner's
job then says so, and Retry needs the files again."""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage

from sqlalchemy import and_, func, or_, select

from app.core import jobs as job_states
from app.core import mail
from app.core.db import utcnow
from app.core.models import Job, JobFile, JobState, User
from app.core.services import Services

log = logging.getLogger(__name__)


@dataclass
class Due:
    user: User
    files: list[str] = field(default_factory=list)
    images: dict[int, tuple[str, str | None]] = field(default_factory=dict)  # job id -> (first file, OMERO link)
    bytes: int = 0
    oldest: object = None  # datetime of the oldest import


def due(db, days: int, owner_id: int | None = None) -> list[Due]:
    """Per user: the files imported more than `days` days ago."""
    query = (select(User, JobFile.name, JobFile.size, Job.finished_at, Job.id, Job.link).join(Job, Job.owner_id == User.id)
             .join(JobFile, JobFile.job_id == Job.id)
             .where(Job.state == JobState.IMPORTED, Job.finished_at < utcnow() - timedelta(days=days))
             .order_by(User.username, Job.finished_at, JobFile.id))
    if owner_id is not None:
        query = query.where(User.id == owner_id)
    result: dict[int, Due] = defaultdict(lambda: None)
    for user, name, size, finished, job_id, link in db.execute(query):
        entry = result[user.id] or Due(user, oldest=finished)
        entry.files.append(name)
        entry.images.setdefault(job_id, (name, link))
        entry.bytes += size
        result[user.id] = entry
    return list(result.values())


def reminder(entry: Due, days: int, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"] = sender, entry.user.email
    images = list(entry.images.values())
    message["Subject"] = f"{len(images)} image{'' if len(images) == 1 else 's'} in OMERO for more than {days} days"
    listed = "\n".join(f"  {name}" + (f"\n    {link}" if link else "") for name, link in images[:200])
    more = f"\n  ... and {len(images) - 200} more" if len(images) > 200 else ""
    message.set_content(
        f"Hello {entry.user.full_name or entry.user.username},\n\n"
        f"these images went into OMERO through the upload portal more than {days} days ago; data must leave\n"
        f"the transfer server within {days} days. In OMERO.web, open each image (links below), use Download\n"
        f"in the right-hand panel to save its original file, and once your copy is safe, select the image\n"
        f"and choose Delete. The portal deletes nothing itself.\n\n{listed}{more}\n"
    )
    return message


def send_reminders(services: Services) -> int:
    """E-mail every user with files past the retention time who was not reminded lately."""
    config = services.config
    if not config["SMTP_HOST"]:
        return 0
    days, sent = config["RETENTION_DAYS"], 0
    quiet_since = utcnow() - timedelta(days=config["REMINDER_EVERY_DAYS"])
    with services.db.session() as db:
        for entry in due(db, days):
            user = entry.user
            if not user.email or (user.reminded_at and user.reminded_at > quiet_since):
                continue
            if not mail.send(config, reminder(entry, days, config["MAIL_FROM"])):
                continue
            user.reminded_at = utcnow()
            db.commit()
            sent += 1
    return sent


FREEABLE = (JobState.FAILED, JobState.CANCELLED, JobState.UPLOADING)


def staged_bytes(path) -> int:
    """Bytes held under a staging folder (a job's, or the whole staging area)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def free_job(db, job: Job, staging, why: str) -> int:
    """Remove a failed, cancelled or unfinished job's staged bytes; tell its owner; return the bytes freed."""
    if job.state not in FREEABLE:
        raise job_states.NotAllowed(f"Only the bytes of a failed, cancelled or unfinished job can be freed "
                                    f"(this one is {job.state})")
    freed = staged_bytes(staging.job_dir(job.id))
    gone = f"its files were removed from the transfer server ({why}): to try again, import them again"
    if job.state == JobState.UPLOADING:
        job_states.record(db, job, state=JobState.FAILED, message=f"Not sent completely; {gone}",
                          can_retry=False, finished_at=utcnow())
    elif job.state == JobState.FAILED and job.can_retry:
        job_states.record(db, job, message=f"{job.message.rstrip('.')}; {gone}", can_retry=False)
    db.commit()
    staging.remove_job(job.id)
    return freed


def free_staging(services: Services) -> int:
    """Free the staged bytes of jobs that ended (or stopped being sent) more than STAGING_KEEP_DAYS ago."""
    days = services.config["STAGING_KEEP_DAYS"]
    cutoff = utcnow() - timedelta(days=days)
    staging, freed = services.staging, 0
    with services.db.session() as db:
        ended = func.coalesce(Job.finished_at, Job.created_at)
        stale = db.scalars(select(Job).where(or_(
            and_(Job.state.in_((JobState.FAILED, JobState.CANCELLED)), ended < cutoff),
            and_(Job.state == JobState.UPLOADING, Job.created_at < cutoff))).order_by(Job.id)).all()
        for job in stale:
            if staging.job_dir(job.id).exists() or job.state == JobState.UPLOADING:
                freed += free_job(db, job, staging, f"kept {days} days")
    if freed:
        log.info("staging hygiene freed %d bytes", freed)
    return freed
