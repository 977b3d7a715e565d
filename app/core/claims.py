"""One import per content: the duplicate check and the import of one content (SHA-1) of one user in
one group are done by one job at a time.

Two batches holding the same new file, completed together, both found nothing in OMERO and both
imported it. A job now first claims its content with a row whose primary key is the content: the
database lets one insert win (SQLite and PostgreSQL alike). The other job waits in the queue and,
once the first has ended, finds its image: a duplicate. A claim whose job no longer runs (it ended,
or its worker died and the lease ran out) is taken over.
"""
from __future__ import annotations

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.models import ContentClaim, Job, JobState


class Busy(Exception):
    """Another job is checking for or importing the same content right now."""

    def __init__(self, job_id: int, seconds: float):
        super().__init__(f"Waiting for job {job_id}, which imports the same content")
        self.job_id, self.seconds = job_id, seconds  # how long that job has held it


def hold(session: Session, job: Job, group_id: int, worker: str) -> None:
    """Claim the job's content for this run, or raise Busy."""
    key = {"owner_id": job.owner_id, "group_id": group_id, "content_sha1": job.content_sha1}
    try:
        session.add(ContentClaim(**key, job_id=job.id, worker=worker))
        session.commit()
        return
    except IntegrityError:
        session.rollback()
    claim = session.get(ContentClaim, (job.owner_id, group_id, job.content_sha1), populate_existing=True)
    if claim is None:  # released meanwhile
        return hold(session, job, group_id, worker)
    if claim.job_id != job.id and _running(session, claim):
        raise Busy(claim.job_id, (utcnow() - claim.claimed_at).total_seconds())
    # ours from an earlier run of this job, or left by a job that no longer runs: take it over, unless
    # another job took it over first
    taken = session.execute(update(ContentClaim).filter_by(**key, job_id=claim.job_id, worker=claim.worker)
                            .values(job_id=job.id, worker=worker, claimed_at=utcnow())).rowcount
    session.commit()
    if taken != 1:
        return hold(session, job, group_id, worker)


def _running(session: Session, claim: ContentClaim) -> bool:
    return session.scalar(select(Job.id).where(
        Job.id == claim.job_id, Job.state.in_(JobState.CLAIMABLE), Job.lease_owner == claim.worker,
        or_(Job.lease_expires.is_(None), Job.lease_expires > utcnow()))) is not None


def release(session: Session, job_id: int, worker: str) -> None:
    """Drop what this run claimed (a claim already taken over by another run stays theirs)."""
    session.execute(delete(ContentClaim).where(ContentClaim.job_id == job_id, ContentClaim.worker == worker))
    session.commit()
