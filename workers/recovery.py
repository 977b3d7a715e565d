"""Give jobs left by dead workers to live ones, and keep waiting users' OMERO sessions alive.

Runs as a thread in each worker's main process. Several workers sweeping at once is harmless: a job
runs only for the worker that claims its lease.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError

from app.core import crypto
from app.core.db import utcnow
from app.core.jobs import beat_period, enqueue, stale_jobs
from app.core.models import Job, JobState, User, WorkerBeat
from app.core.omero.base import OmeroError
from app.core.services import Services

log = logging.getLogger(__name__)


def sweep(services: Services, lost_after: timedelta | None = None) -> list[int]:
    """Requeue jobs whose worker died (lease expired) and queued jobs whose message seems lost (not
    claimed within lost_after). Return their ids; a message for a job that turns out to be running
    elsewhere is a no-op, since only a claim runs a job."""
    lease = services.config["JOB_LEASE_SECONDS"]
    with services.db.session() as db:
        jobs = stale_jobs(db, requeue_after=lost_after or timedelta(seconds=max(900, 4 * lease)))
        enqueue(db, jobs)
        ids = [job.id for job in jobs]
    if ids:
        log.info("requeued %d job(s) left by stopped workers: %s", len(ids), ids)
    return ids


def keep_sessions_alive(services: Services) -> None:
    """Touch the OMERO session of every user with a job under way, from its first byte received to
    its end, so it does not idle out (OMERO.web's sessions do after 10 minutes) while bytes
    upload or jobs wait."""
    gateway, staging = services.omero, services.staging
    with services.db.session() as db:
        rows = db.execute(select(User.omero_key, Job.id, Job.state).join(Job, Job.owner_id == User.id)
                          .where(Job.state.in_((JobState.UPLOADING, *JobState.CLAIMABLE))))
        keys = {key for key, job_id, state in rows
                if state != JobState.UPLOADING or staging.job_dir(job_id).is_dir()}  # a byte arrived
        for key in keys:
            plain = key and crypto.decrypt(key, services.config["ENCRYPTION_KEY"])
            if plain:
                try:
                    gateway.keep_alive(plain)
                except OmeroError as e:
                    log.warning("keep-alive failed: %s", e)


def beat(services: Services, node: str, concurrency: int) -> None:
    """Say this worker is alive (the staff view's list of workers)."""
    with services.db.session() as db:
        row = db.get(WorkerBeat, node) or WorkerBeat(name=node, started_at=utcnow())
        row.last_seen, row.concurrency = utcnow(), concurrency
        db.add(row)
        db.execute(delete(WorkerBeat).where(WorkerBeat.last_seen < utcnow() - timedelta(days=1)))  # long gone
        db.commit()


def start(services: Services, node: str, concurrency: int) -> threading.Thread:
    period = beat_period(services.config)
    # A worker that died took the messages it had fetched but not yet claimed; when a worker
    # starts (often: the same one, restarted), send those jobs again without waiting long.
    try:
        sweep(services, lost_after=timedelta(seconds=services.config["JOB_LEASE_SECONDS"]))
    except SQLAlchemyError as e:  # the loop below tries again
        log.warning("start-up sweep failed: %s", e)

    def loop() -> None:
        while True:
            try:
                beat(services, node, concurrency)
                sweep(services)
                keep_sessions_alive(services)
            except SQLAlchemyError as e:  # the database restarts: try again next round
                log.warning("recovery sweep failed: %s", e)
            time.sleep(period)

    thread = threading.Thread(target=loop, name="job-recovery", daemon=True)
    thread.start()
    return thread
