"""One job, start to end: verify -> convert -> find duplicates -> place -> import (annotated).

Plain functions over the app's database, staging and OMERO gateway; the Celery task only calls
`run_job`. A job runs for whoever holds its lease; a rerun after a crash finds its own image by the
job's uid in the provenance annotation and finishes instead of importing twice.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from flask import Flask
from sqlalchemy import update
from sqlalchemy.exc import OperationalError, SQLAlchemyError

import converters
from app import __version__, crypto
from app import jobs as job_states
from app.db import utcnow
from app.models import Job, JobState, User
from app.omero.base import Annotations, ImageRef, OmeroError, SessionExpired
from app.staging import hash_file

log = logging.getLogger(__name__)
DB_RETRY_SECONDS = 5  # a job picked up while the database restarts waits this long, then tries again


@dataclass
class RetryLater:
    seconds: float


class JobFailed(Exception):
    """End the job as failed with this message for the researcher."""


class Run:
    """One worker's hold on one job: every write checks the lease is still ours."""

    def __init__(self, app: Flask, job: Job, worker: str):
        self.app, self.job_id, self.worker = app, job.id, worker
        self.db = app.extensions["db"]
        self.lease = app.config["JOB_LEASE_SECONDS"]
        self._last_progress = 0.0
        self._stop = threading.Event()
        self._keeper = threading.Thread(target=self._keep_lease, daemon=True, name=f"lease-{job.id}")

    def __enter__(self) -> Run:
        self._keeper.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._keeper.join()

    def _keep_lease(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                with self.db.session() as db:
                    job_states.renew(db, self.job_id, self.worker, self.lease)
            except job_states.LeaseLost:
                return
            except SQLAlchemyError as e:
                log.warning("job %s: lease renewal failed: %s", self.job_id, e)

    def update(self, **changes) -> Job:
        with self.db.session() as db:
            owned = db.execute(update(Job).where(Job.id == self.job_id, Job.lease_owner == self.worker)
                               .values(lease_owner=self.worker)).rowcount
            if owned != 1:
                raise job_states.LeaseLost(self.job_id)
            job = db.get(Job, self.job_id)
            job_states.record(db, job, **changes)
            db.commit()
            return job

    def progress(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self._last_progress >= 1.0:  # one event a second is live enough
            self._last_progress = now
            self.update(progress=round(fraction, 3), message=message)

    def finish(self, state: str, message: str, **changes) -> Job:
        return self.update(state=state, message=message, progress=1.0 if state != JobState.FAILED else 0.0,
                           finished_at=utcnow(), lease_owner=None, lease_expires=None, **changes)


def run_job(app: Flask, job_id: int, worker: str) -> str | RetryLater:
    try:
        return _run_job(app, job_id, worker)
    except OperationalError as e:
        # The database went away (a restart): nothing was decided, so run the job again once it is
        # back. Dropping the message instead would leave a queued job alone until the slow sweep.
        log.warning("job %s: the database is unreachable, trying again in %s s: %s", job_id, DB_RETRY_SECONDS, e)
        return RetryLater(DB_RETRY_SECONDS)


def _run_job(app: Flask, job_id: int, worker: str) -> str | RetryLater:
    db = app.extensions["db"]
    with db.session() as session:
        job = job_states.claim(session, job_id, worker, app.config["JOB_LEASE_SECONDS"])
        if job is None:
            return "not claimable"  # final, cancelled, or running on a live worker
        job.batch, job.files  # noqa: B018 - load what the run needs while the session is open
    with Run(app, job, worker) as run:
        try:
            if job.attempts > app.config["JOB_MAX_ATTEMPTS"]:
                raise JobFailed(f"Processing this file stopped the worker {job.attempts - 1} times; "
                                "the facility staff have the details")
            return _process(app, run, job)
        except job_states.LeaseLost:
            return "lease lost"
        except (JobFailed, converters.ConversionError) as e:
            run.finish(JobState.FAILED, str(e))
            return "failed"
        except OmeroError as e:
            if e.transient and job.attempts <= app.config["JOB_MAX_RETRIES"]:
                delay = min(300, 5 * 2 ** (job.attempts - 1))
                run.update(message=f"{e}: trying again in {delay} s", lease_owner=None, lease_expires=None,
                           enqueued_at=utcnow(), detail=_noted(job, f"attempt {job.attempts}: {e!r}"))
                return RetryLater(delay)
            run.finish(JobState.FAILED, str(e), detail=_noted(job, f"attempt {job.attempts}: {e!r}"))
            return "failed"
        except OperationalError:
            raise  # the database, not this job, failed: run_job tries again
        except Exception:  # noqa: BLE001 - a bug fails its own row, never the worker or the batch
            log.exception("job %s failed unexpectedly", job_id)
            run.finish(JobState.FAILED, f"The portal hit an internal error on this file (job {job_id}); "
                                        "the facility staff can see the details",
                       detail=_noted(job, f"attempt {job.attempts} on {worker}:\n{traceback.format_exc()}"))
            return "failed"


def _noted(job: Job, line: str) -> str:
    """The job's staff-only diagnostics with one more entry (the newest kept when it grows long)."""
    return (f"{job.detail}\n{utcnow():%Y-%m-%d %H:%M:%S} UTC {line}".strip())[-20_000:]


def _process(app: Flask, run: Run, job: Job) -> str:
    staging = app.extensions["staging"]
    paths = [staging.path(job.id, f.stored_name) for f in job.files]
    for f, path in zip(job.files, paths):
        if not path.is_file() or path.stat().st_size != f.size or hash_file(path).hexdigest() != f.sha1:
            raise JobFailed(f"{f.name} is no longer intact on the transfer server: import it again")

    run.update(state=JobState.CONVERTING, message="Converting", progress=0.0, started_at=utcnow())
    work = staging.job_dir(job.id) / "converted"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    options = converters.ConvertOptions(timezone=app.config["TZ"], microscope_names=app.config["MICROSCOPE_NAMES"],
                                        progress=lambda share: run.progress(share, "Converting"))
    conversion = converters.convert(paths, work, options)
    return _import(app, run, job, conversion)


def _import(app: Flask, run: Run, job: Job, conversion: converters.Conversion) -> str:
    staging, gateway = app.extensions["staging"], app.extensions["omero"]
    with app.extensions["db"].session() as db:
        owner = db.get(User, job.owner_id)
        key = owner.omero_key and crypto.decrypt(owner.omero_key)
    if not key:
        raise SessionExpired()
    batch = job.batch
    acquired = conversion.acquired or datetime.now(timezone.utc)
    project = conversion.microscope or "Undefined"
    dataset = acquired.astimezone(app.config["TZ"]).date().isoformat()
    common = {"microscope": project, "project": project, "dataset": dataset,
              "acquired": conversion.acquired.isoformat() if conversion.acquired else None}

    with gateway.session(key) as omero:
        found = omero.find_images(batch.group_id, job.content_sha1)  # another group's copy does not block
        ours = [image for image in found if image.job_uid == job.uid]
        if ours:  # an earlier run of this job imported it and then stopped
            return _done(run, staging, job, ours, JobState.IMPORTED, "Imported", common)
        if found:
            return _done(run, staging, job, found[:1], JobState.DUPLICATE,
                         f"Already in OMERO as image {found[0].id} ({found[0].name})", common)
        placement = omero.get_or_create_dataset(batch.group_id, project, dataset)
        run.update(state=JobState.IMPORTING, message=f"Importing into {project} / {dataset}", progress=0.0)
        images = omero.import_image(
            batch.group_id, placement.dataset_id, [conversion.output], name=Path(job.files[0].name).name,
            description=f"Imported by the OMERO Upload Portal from {', '.join(f.name for f in job.files)}",
            annotations=_annotations(job, conversion), progress=lambda sent, total: run.progress(
                sent / total if total else 1.0, f"Importing into {project} / {dataset}"),
        )
    sent_sha1 = hash_file(conversion.output).hexdigest()
    if not images or images[0].sha1 != sent_sha1:
        raise JobFailed("OMERO's copy does not match the file sent (checksum differs): retry the import")
    return _done(run, staging, job, images, JobState.IMPORTED,
                 f"Imported into {project} / {dataset}" + "".join(f"; {n}" for n in conversion.notes), common)


def _annotations(job: Job, conversion: converters.Conversion) -> Annotations:
    batch = job.batch
    pairs = [tuple(pair) for pair in batch.key_values]
    if batch.folder:
        pairs.append(("Folder", batch.folder))
    return Annotations(
        key_values=pairs,
        tags=list(dict.fromkeys(value for _key, value in batch.key_values)),
        metadata=conversion.metadata,
        provenance={
            "portal_version": __version__, "job_uid": job.uid, "content_sha1": job.content_sha1,
            "source_files": "; ".join(f.name for f in job.files),
            "source_sha1": "; ".join(f.sha1 for f in job.files), "conversion": conversion.status,
        },
    )


def _done(run: Run, staging, job: Job, images: list[ImageRef], state: str, message: str, common: dict) -> str:
    run.finish(state, message, image_ids=[image.id for image in images], link=images[0].url, **common)
    staging.remove_job(job.id)  # OMERO holds the image and its checksum matched
    return state
