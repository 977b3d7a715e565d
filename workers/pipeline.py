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
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError, SQLAlchemyError

import converters
from app import __version__
from app.core import claims, crypto
from app.core import jobs as job_states
from app.core.db import utcnow
from app.core.microscopes import microscope_names
from app.core.models import Job, JobState, User
from app.core.omero.base import Annotations, ImageRef, OmeroError, SessionExpired, one_import
from app.core.services import Services
from app.core.staging import hash_file
from workers import custody, limits

log = logging.getLogger(__name__)
DB_RETRY_SECONDS = 5  # a job picked up while the database restarts waits this long, then tries again


@dataclass
class RetryLater:
    seconds: float


class JobFailed(Exception):
    """End the job as failed with this message for the researcher; Retry is offered when it may help."""

    def __init__(self, message: str, retry_helps: bool = False):
        super().__init__(message)
        self.retry_helps = retry_helps


class Run:
    """One worker's hold on one job: every write checks the lease is still ours."""

    def __init__(self, services: Services, job: Job, worker: str):
        self.job_id, self.worker = job.id, worker
        self.db = services.db
        self.lease = services.config["JOB_LEASE_SECONDS"]
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

    def check(self) -> None:
        """Raise Cancelled or LeaseLost when the job is no longer ours."""
        with self.db.session() as db:
            if db.scalar(select(Job.lease_owner).where(Job.id == self.job_id)) != self.worker:
                raise job_states.lost(db, self.job_id)

    def update(self, **changes) -> Job:
        with self.db.session() as db:
            owned = db.execute(update(Job).where(Job.id == self.job_id, Job.lease_owner == self.worker)
                               .values(lease_owner=self.worker)).rowcount
            if owned != 1:
                raise job_states.lost(db, self.job_id)
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


def run_job(services: Services, job_id: int, worker: str) -> str | RetryLater:
    try:
        return _run_job(services, job_id, worker)
    except OperationalError as e:
        # The database went away (a restart): nothing was decided, so run the job again once it is
        # back. Dropping the message instead would leave a queued job alone until the slow sweep.
        log.warning("job %s: the database is unreachable, trying again in %s s: %s", job_id, DB_RETRY_SECONDS, e)
        return RetryLater(DB_RETRY_SECONDS)


def _run_job(services: Services, job_id: int, worker: str) -> str | RetryLater:
    db = services.db
    with db.session() as session:
        job = job_states.claim(session, job_id, worker, services.config["JOB_LEASE_SECONDS"])
        if job is None:
            return "not claimable"  # final, cancelled, or running on a live worker
        job.batch, job.files  # noqa: B018 - load what the run needs while the session is open
    with Run(services, job, worker) as run:
        try:
            return _settle(services, run, job, worker)
        except job_states.Cancelled:  # also when it came while a failure below was being recorded
            _take_back(services, job)
            return "cancelled"
        except job_states.LeaseLost:
            return "lease lost"
        finally:
            _release_claim(services, job.id, worker)


def _settle(services: Services, run: Run, job: Job, worker: str) -> str | RetryLater:
    """Process the job and record how it ended; LeaseLost (from any write) goes to the caller."""
    job_id = job.id
    try:
        if job.attempts > services.config["JOB_MAX_ATTEMPTS"]:
            raise JobFailed(f"Processing this file stopped the worker {job.attempts - 1} times; "
                            "the facility staff have the details")
        return _process(services, run, job)
    except (JobFailed, converters.ConversionError) as e:  # mostly the same content would fail the same way
        run.finish(JobState.FAILED, _their_names(job, str(e)), can_retry=getattr(e, "retry_helps", False))
        return "failed"
    except claims.Busy as e:  # back in the queue, not counted as an attempt; then likely a duplicate
        delay = min(60.0, max(2.0, e.seconds / 4))
        run.update(message=f"{e}: trying again in {delay:.0f} s", lease_owner=None, lease_expires=None,
                   enqueued_at=utcnow(), attempts=job.attempts - 1)
        return RetryLater(delay)
    except limits.LimitExceeded as e:
        run.finish(JobState.FAILED, str(e), can_retry=False, limit_hit=e.kind,
                   detail=_noted(job, f"attempt {job.attempts} on {worker}: {e.detail}"))
        return "failed"
    except (OmeroError, limits.OutOfSpace) as e:
        transient = isinstance(e, limits.OutOfSpace) or e.transient  # room comes back; the file is fine
        if transient and job.attempts <= services.config["JOB_MAX_RETRIES"]:
            delay = min(300, 5 * 2 ** (job.attempts - 1))
            run.update(state=JobState.QUEUED, message=f"{e}: trying again in {delay} s", progress=0.0,
                       lease_owner=None, lease_expires=None, enqueued_at=utcnow(),
                       detail=_noted(job, f"attempt {job.attempts}: {e!r}"))
            return RetryLater(delay)
        run.finish(JobState.FAILED, str(e), can_retry=transient or e.retry_helps,
                   detail=_noted(job, f"attempt {job.attempts}: {e!r}"))
        return "failed"
    except OperationalError:
        raise  # the database, not this job, failed: run_job tries again
    except Exception:  # noqa: BLE001 - a bug fails its own row, never the worker or the batch
        log.exception("job %s failed unexpectedly", job_id)
        run.finish(JobState.FAILED, f"The portal hit an internal error on this file (job {job_id}); "
                                    "the facility staff can see the details",
                   detail=_noted(job, f"attempt {job.attempts} on {worker}:\n{traceback.format_exc()}"))
        return "failed"


def _release_claim(services: Services, job_id: int, worker: str) -> None:
    try:
        with services.db.session() as db:
            claims.release(db, job_id, worker)
    except SQLAlchemyError as e:  # the claim is taken over once the job no longer runs
        log.warning("job %s: its content claim was not released: %s", job_id, e)


def _take_back(services: Services, job: Job) -> None:
    """A job cancelled while it ran: delete what it imported (a half import included) and its
    staged bytes (the cancel removed them, the run may have written more since)."""
    services.staging.remove_job(job.id)
    with services.db.session() as db:
        owner = db.get(User, job.owner_id)
        key = owner.omero_key and crypto.decrypt(owner.omero_key, services.config["ENCRYPTION_KEY"])
    if not (key and job.content_sha1):
        return
    try:
        with services.omero.session(key) as omero:
            group_id = job.batch.group_id
            omero.delete_images(group_id, [i.id for i in omero.find_images(group_id, job.content_sha1)
                                           if i.job_uid == job.uid])
    except OmeroError as e:  # the job says cancelled; its images carry its uid for staff to find
        log.warning("job %s was cancelled, but its images could not be deleted: %s", job.id, e)


def _their_names(job: Job, message: str) -> str:
    """A converter's message names the staged files: say the researcher's names (a long one was cut)."""
    for f in job.files:
        shown = f.name.rsplit("/", 1)[-1]
        if f.stored_name != shown:
            message = message.replace(f.stored_name, shown)
    return message


def _noted(job: Job, line: str) -> str:
    """The job's staff-only diagnostics with one more entry (the newest kept when it grows long)."""
    return (f"{job.detail}\n{utcnow():%Y-%m-%d %H:%M:%S} UTC {line}".strip())[-20_000:]


def _process(services: Services, run: Run, job: Job) -> str:
    staging = services.staging
    paths = [staging.path(job.id, f.stored_name) for f in job.files]
    for f, path in zip(job.files, paths):
        if not path.is_file() or path.stat().st_size != f.size:
            raise JobFailed(f"{f.name} is no longer intact on the transfer server: import it again")
        if hash_file(path).hexdigest() != f.sha1:  # the SHA-1 its sender named, or the web's own
            raise JobFailed(f"{f.name} on the transfer server is not what was sent (its SHA-1 differs from the "
                            "sender's): it was damaged on the way or changed since; import it again")

    with services.db.session() as db:  # from here to its end, no other job checks for or imports this content
        claims.hold(db, job, job.batch.group_id, run.worker)
    run.update(state=JobState.CONVERTING, message="Converting", progress=0.0, started_at=utcnow())
    work = staging.job_dir(job.id) / "converted"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    options = converters.ConvertOptions(timezone=services.config["TZ"], microscope_names=microscope_names(services),
                                        progress=lambda share: run.progress(share, "Converting"))
    # The room a conversion needs is known only as it writes (an OME-TIFF passes through with none, a
    # compressed source may need many times its size): a disk that fills is a pause, not a failure.
    try:
        conversion = limits.convert(paths, work, options, limits.Limits.for_job(services.config, job.total_size),
                                    run.check)
    except limits.OutOfSpace:
        shutil.rmtree(work, ignore_errors=True)  # the staged files stay for the next attempt
        raise
    return _import(services, run, job, conversion, paths)


UNKNOWN_MICROSCOPE = "unknown microscope"  # the Project of images whose file does not name one
UNKNOWN_DATE = "unknown date"  # the Dataset of images whose file does not date them


def _import(services: Services, run: Run, job: Job, conversion: converters.Conversion, paths: list[Path]) -> str:
    staging, gateway = services.staging, services.omero
    with services.db.session() as db:
        owner = db.get(User, job.owner_id)
        key = owner.omero_key and crypto.decrypt(owner.omero_key, services.config["ENCRYPTION_KEY"])
    if not key:
        raise SessionExpired()
    group_id = job.batch.group_id
    project = conversion.microscope or UNKNOWN_MICROSCOPE
    dataset = conversion.acquired.astimezone(services.config["TZ"]).date().isoformat() if conversion.acquired else UNKNOWN_DATE
    common = {"microscope": conversion.microscope, "project": project, "dataset": dataset,
              "acquired": conversion.acquired.isoformat() if conversion.acquired else None}
    where = f"{project} / {dataset}"

    # the SHA-1 OMERO must hold for each image we send, by the image's name: a file passed through is
    # the staged file, checked against the researcher's SHA-1 in _process (not read once more); a
    # converted one is hashed here
    staged = {path: f.sha1 for f, path in zip(job.files, paths)}
    expected = {_image_name(job, image): staged.get(image.path) or hash_file(image.path).hexdigest()
                for image in conversion.images}
    with gateway.session(key) as omero:
        found = omero.find_images(group_id, job.content_sha1)  # another group's copy does not block
        in_group = {i.id for i in found}
        elsewhere = [i for i in omero.find_images(None, job.content_sha1) if i.id not in in_group and i.complete]
        # An earlier run of this job got this far: keep each import it marked complete with the bytes
        # we send now (all the images of its fileset); an import that failed, was cancelled or cut
        # short is unmarked, and is removed whole and made again.
        ours = _finished_imports(job, found, expected)
        kept = {i.id for images in ours.values() for i in images}
        omero.delete_images(group_id, [i.id for i in found if i.job_uid == job.uid and i.id not in kept])
        others = [i for i in found if i.job_uid != job.uid and i.complete]  # a half import is no copy
        if others and not ours:
            return _done(run, staging, job, JobState.DUPLICATE,
                         f"Already in OMERO as image {others[0].id} ({others[0].name})", common,
                         images=one_import(others, others[0]))
        run.update(state=JobState.IMPORTING, message=f"Importing into {where}", progress=0.0, **common)  # shown if it fails
        if len(ours) < len(conversion.images):
            placement = omero.get_or_create_dataset(group_id, project, dataset)
            ours = _import_images(omero, run, job, conversion, placement.dataset_id, ours, where, expected)
            # An earlier attempt this job gave up on (a network blip) may have gone on importing on the
            # server: keep only these images.
            kept = {i.id for images in ours.values() for i in images}
            omero.delete_images(group_id, [i.id for i in omero.find_images(group_id, job.content_sha1)
                                           if i.job_uid == job.uid and i.id not in kept])
        ours = [i for images in ours.values() for i in images]
        record = custody.keep(omero, job, conversion, paths, ours, services.config["KEEP_ORIGINALS"],
                              lambda sent, total: run.progress(sent / total if total else 1.0, f"Keeping the originals in {where}"))
    warnings = conversion.warnings  # the converters' own: date, microscope, pixel size, what they could not read
    message = f"Imported into {where}" + "".join(f"; {n}" for n in conversion.notes)
    if elsewhere:  # said at the end too: the row's last message is the one a researcher reads
        message += f"; also in OMERO in another of your groups (image {elsewhere[0].id}, {elsewhere[0].name})"
    if warnings:
        message += "; check: " + ", ".join(warnings)
    return _done(run, staging, job, JobState.IMPORTED, message, common, images=ours, warnings=warnings,
                 accounted=[vars(a) for a in conversion.accounted], **record)


def _image_name(job: Job, image: converters.OutputImage) -> str:
    """The OMERO image's name: the file's, and the signal's for an image beyond the first."""
    file_name = Path(job.files[0].name).name
    return file_name if image.title is None else f"{file_name} [{image.title}]"


def _finished_imports(job: Job, found: list[ImageRef], expected: dict[str, str]) -> dict[str, list[ImageRef]]:
    """This job's imports marked complete, by the name of the conversion image each imported, found
    by the SHA-1 OMERO holds (every image of a multi-series import carries its file's)."""
    by_sha1 = {sha1: name for name, sha1 in expected.items()}
    imports: dict[str, list[ImageRef]] = {}
    for image in sorted(found, key=lambda i: i.id):
        if image.job_uid == job.uid and image.complete and image.sha1 in by_sha1:
            kept = imports.setdefault(by_sha1[image.sha1], [image])
            if image is not kept[0] and image.fileset_id == kept[0].fileset_id:  # one import of each, the first
                kept.append(image)
    return imports


def _import_images(omero, run: Run, job: Job, conversion: converters.Conversion, dataset_id: int,
                   done: dict[str, list[ImageRef]], where: str, expected: dict[str, str]) -> dict[str, list[ImageRef]]:
    """Import each image of the conversion not imported yet, in order (primary first), each
    annotated like the first; every image an import made must hold the SHA-1 of the file we sent,
    and is then marked complete. Returns the images of each, by name, in the conversion's order."""
    have = dict(done)
    total = sum(image.path.stat().st_size for image in conversion.images)
    sent_before = 0
    for image in conversion.images:
        name = _image_name(job, image)
        size = image.path.stat().st_size
        if name not in have:
            try:
                made = omero.import_image(
                    job.batch.group_id, dataset_id, [image.path], name=name,
                    description=f"Imported by the OMERO Upload Portal from {', '.join(f.name for f in job.files)}",
                    annotations=_annotations(job, conversion), progress=lambda sent, _total: run.progress(
                        (sent_before + sent) / total if total else 1.0, f"Importing into {where}"))
            except OmeroError as e:
                if not e.retry_helps:  # no rerun will come to remove what the server saved before it gave up
                    _remove_unfinished(omero, job, expected[name])
                raise
            if not made or any(i.sha1 != expected[name] for i in made):
                omero.delete_images(job.batch.group_id, [image.id for image in made])  # no wrong copy stays
                raise JobFailed("OMERO's copy does not match the file sent (checksum differs): retry the import",
                                retry_helps=True)
            omero.mark_complete(job.batch.group_id, [i.id for i in made])
            have[name] = made
        sent_before += size
    return {_image_name(job, image): have[_image_name(job, image)] for image in conversion.images}


def _remove_unfinished(omero, job: Job, sha1: str) -> None:
    """Remove what an import the server gave up on left: the job's unmarked images, or the fileset of
    the file sent (SHA-1) when it failed before saving images; if OMERO can be asked. Otherwise they
    stay unmarked, which no reader counts."""
    group_id = job.batch.group_id
    try:
        omero.delete_images(group_id, [i.id for i in omero.find_images(group_id, job.content_sha1)
                                       if i.job_uid == job.uid and not i.complete])
        omero.delete_unused_filesets(group_id, sha1)
    except OmeroError as e:
        log.warning("job %s: could not remove its unfinished import: %s", job.id, e)


def _annotations(job: Job, conversion: converters.Conversion) -> Annotations:
    batch = job.batch
    pairs = [tuple(pair) for pair in batch.key_values]
    if batch.folder and job.files[0].name.startswith(batch.folder + "/"):  # files chosen by hand came from no folder
        pairs.append(("Folder", batch.folder))
    return Annotations(
        key_values=pairs,
        tags=list(dict.fromkeys(value for _key, value in batch.key_values)),
        metadata=conversion.metadata,
        provenance={
            "portal_version": __version__, "job_uid": job.uid, "content_sha1": job.content_sha1,
            "content_size": str(job.total_size),  # the duplicate check's first sieve (content_sizes)
            "source_files": "; ".join(f.name for f in job.files),
            "source_sha1": "; ".join(f.sha1 for f in job.files), "conversion": conversion.status,
        },
    )


def _done(run: Run, staging, job: Job, state: str, message: str, common: dict, *, images: list[ImageRef],
          **record) -> str:
    run.finish(state, message, image_ids=[image.id for image in images], link=images[0].url,
               images=[{"id": i.id, "name": i.name, "url": i.url} for i in images], **common, **record)
    staging.remove_job(job.id)  # OMERO holds the images, their checksums matched, and the originals are kept
    return state
