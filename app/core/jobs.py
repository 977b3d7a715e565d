"""Job state changes: each one writes the job and its event in the same transaction.

The API (queued, cancelled, retried) and the workers (converting ... imported) both go through here,
so the event log is complete by construction; Celery is told only after the commit.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import NamedTuple

from celery import current_app as current_celery
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy import String, cast, or_, select, update
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.models import Job, JobEvent, JobState

TASK_NAME = "portal.process_job"
DEFAULT_PRIORITY = 5  # Redis serves 0 first: staff "move to front" sends a job's message again at 0
log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another worker owns this job now (our lease expired); stop without touching it."""


class Cancelled(LeaseLost):
    """The job was cancelled while it ran: stop, and take back what this run made."""


def lost(session: Session, job_id: int) -> LeaseLost:
    """Why a job is no longer ours: cancelled, or given to another worker."""
    state = session.scalar(select(Job.state).where(Job.id == job_id))
    return Cancelled(job_id) if state == JobState.CANCELLED else LeaseLost(job_id)


def record(session: Session, job: Job, **changes) -> None:
    """Apply changes to the job and append the event that tells its owner."""
    for name, value in changes.items():
        setattr(job, name, value)
    session.flush()
    session.add(JobEvent(job_id=job.id, owner_id=job.owner_id, data=job.public()))


def enqueue(session: Session, jobs: list[Job], front: bool = False) -> None:
    """Hand committed jobs to the workers. A broker that is down loses nothing: the job is a row,
    and the workers' recovery sweep queues it again (workers.recovery)."""
    now = utcnow()
    for job in jobs:
        if not front:  # moved to the front, a job has still waited since it was queued
            job.enqueued_at = now
    session.commit()
    try:
        for job in jobs:
            current_celery.send_task(TASK_NAME, args=[job.id], priority=0 if front else DEFAULT_PRIORITY)
    except KombuOperationalError as e:
        log.warning("broker unreachable, %d job(s) wait for the recovery sweep: %s", len(jobs), e)


class NotAllowed(Exception):
    """The job is not in a state that allows this; the message says why."""


def cancel(session: Session, job: Job, staging, by_staff: bool = False) -> None:
    """Cancel a job that has not ended. One that runs is stopped by its worker: a conversion at once
    (its process is killed), an import at its next block, and what it imported is deleted."""
    if job.state not in (JobState.UPLOADING, *JobState.CLAIMABLE):
        raise NotAllowed(f"Only a job that has not ended can be cancelled (this one is {job.state})")
    record(session, job, state=JobState.CANCELLED, message="Cancelled" + (" by the facility staff" if by_staff else ""),
           finished_at=utcnow(), lease_owner=None, lease_expires=None)
    session.commit()
    staging.remove_job(job.id)


def retry(session: Session, job: Job, staging) -> None:
    """Queue a failed (or cancelled, for staff) job again; its bytes must still be on the server."""
    if job.state != JobState.FAILED:
        raise NotAllowed(f"Only a failed job can be retried (this one is {job.state})")
    if not job.can_retry:
        raise NotAllowed("Retrying cannot help this job: " + (job.message or "it failed on its content"))
    if not job.files or not all(f.completed_at for f in job.files):
        raise NotAllowed("This job never had all its files: add the missing files in a new import")
    if any(staging.received(job.id, f.stored_name) != f.size for f in job.files):
        raise NotAllowed("This job's files are no longer on the server: import them again")
    record(session, job, state=JobState.QUEUED, message="Waiting for a worker", progress=0.0,
           lease_owner=None, lease_expires=None, attempts=0, finished_at=None)
    session.commit()
    enqueue(session, [job])


def claim(session: Session, job_id: int, worker: str, lease_seconds: int) -> Job | None:
    """Take the job for this worker unless it is final or another live worker holds it."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state.in_(JobState.CLAIMABLE),
               or_(Job.lease_expires.is_(None), Job.lease_expires < now))
        .values(lease_owner=worker, lease_expires=now + timedelta(seconds=lease_seconds),
                attempts=Job.attempts + 1)
    )
    session.commit()
    return session.get(Job, job_id, populate_existing=True) if result.rowcount == 1 else None


def renew(session: Session, job_id: int, worker: str, lease_seconds: int) -> None:
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.lease_owner == worker)
        .values(lease_expires=utcnow() + timedelta(seconds=lease_seconds))
    )
    session.commit()
    if result.rowcount != 1:
        raise lost(session, job_id)


def beat_period(config) -> float:
    """Seconds between a worker's heartbeats and recovery sweeps: twice per lease, and at least every
    10 s so the staff view sees a stopped worker within 30 s."""
    return max(1.0, min(10.0, config["JOB_LEASE_SECONDS"] / 2))


def stale_jobs(session: Session, requeue_after: timedelta) -> list[Job]:
    """Jobs a dead worker left (lease expired), and queued jobs whose message seems lost."""
    now = utcnow()
    return list(session.query(Job).where(
        Job.state.in_(JobState.CLAIMABLE),
        or_(Job.lease_expires < now,
            (Job.state == JobState.QUEUED) & Job.lease_expires.is_(None) & (Job.enqueued_at < now - requeue_after)),
    ).order_by(Job.id).limit(500))


# The lists' filter for imports to check: imported, with warnings (date, microscope or pixel size unknown)
TO_CHECK = "check"


def to_check():
    """SQL: the job is imported with warnings (a JSON list: "[]" when none, null in rows older than it)."""
    return (Job.state == JobState.IMPORTED) & cast(Job.warnings, String).not_in(["[]", "null"])


class State(NamedTuple):
    name: str
    label: str
    colour: str  # gray | yellow | cyan | green | orange | red: the badge's class colour-<colour> (style.css)
    meaning: str
    in_legend: bool = True  # listed on the help page


# Every state a row of a page can show, declared here only, in order: the page's own (a file not yet
# sent) and the jobs' (JobState). The pages get them from page_states(); the help page lists them.
STATES = [
    State("pending", "Pending", "gray", "chosen, not sent yet (or waiting for its turn)"),
    State("sending", "Uploading", "cyan", "the bytes are on their way; the bar shows how far"),
    State("checking", "Checking", "cyan", "the file's checksum is computed on this computer (before sending when OMERO holds a file of its size, to ask whether it holds the same content; else while sending)"),
    State("offline", "Waiting for network", "gray", "the connection dropped; sending goes on by itself when it is back"),
    State("notsent", "Not sent", "red", "cannot be imported as chosen (a partner file is missing, or the format is not supported)"),
    State("queued", "Queued", "yellow", "the file is safe on the transfer server and waits for a worker"),
    State("converting", "Converting", "cyan", "being converted to OME-TIFF with its metadata"),
    State("importing", "Importing", "cyan", "being imported into OMERO"),
    State("imported", "Imported", "green", "in OMERO, with a link to the image"),
    State("duplicate", "Already in OMERO", "orange", "the same content is already among your images: nothing was added; the link opens it"),
    State("failed", "Failed", "red", "not imported; the reason is shown, and Retry is offered when the files are still on the server"),
    State("cancelled", "Cancelled", "gray", "cancelled by you or the facility staff; nothing of it stays in OMERO"),
    State("uploading", "Not sent completely", "gray", "created, but not every byte arrived yet", in_legend=False),
]


def page_states() -> dict[str, dict]:
    """What the pages' scripts read: each state's label and colour, and whether it ends a job."""
    return {s.name: {"label": s.label, "colour": s.colour, "final": s.name in JobState.FINAL} for s in STATES}
