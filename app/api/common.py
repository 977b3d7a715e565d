"""What the API's modules share: the signed-in user's own rows (another user's answer 404, as if they
did not exist), their JSON, and the user's OMERO session with OMERO's refusals as API answers."""
from __future__ import annotations

from contextlib import contextmanager

from flask import current_app, g
from sqlalchemy import func, or_, select

from app.core import crypto
from app.core.models import Batch, Job, JobEvent, JobFile, User
from app.core.omero.base import OmeroError, PermissionDenied, SessionExpired
from app.errors import ApiError


def _db():
    return current_app.extensions["services"].db.session()


def _staging():
    return current_app.extensions["services"].staging


def _own(db, model, id_: int):
    """The row if it is the user's, or in a batch the user created for someone (staff import-as)."""
    query = select(model).where(model.id == id_)
    if model is JobFile:
        query = query.join(Job, Job.id == JobFile.job_id)
    if model is not Batch:
        query = query.join(Batch, Batch.id == Job.batch_id)
    query = query.where(or_(Batch.owner_id == g.user.id, Batch.created_by_id == g.user.id))
    row = db.scalar(query)
    if row is None:
        raise ApiError("Not found", 404)
    return row


def _file_json(f: JobFile) -> dict:
    received = f.size if f.completed_at else _staging().received(f.job_id, f.stored_name)
    # sha1, once complete: the server's own (every chunk checked), else the client's, which the worker checks
    return {"id": f.id, "name": f.name, "size": f.size, "received": received, "complete": f.completed_at is not None,
            "sha1": f.sha1 if f.completed_at else None}


def _job_json(job: Job) -> dict:
    return {**job.public(), "files": [_file_json(f) for f in job.files]}


def _batch_json(db, batch: Batch) -> dict:
    cursor = db.scalar(select(func.max(JobEvent.id)).where(JobEvent.owner_id == batch.owner_id)) or 0
    return {
        "id": batch.id, "owner_id": batch.owner_id, "created_by_id": batch.created_by_id, "group_id": batch.group_id, "group_name": batch.group_name,
        "key_values": batch.key_values, "folder": batch.folder, "created_at": batch.created_at.isoformat() + "Z",
        "jobs": [_job_json(job) for job in batch.jobs], "cursor": cursor,
    }


@contextmanager
def _omero_errors(denied: int):
    """OMERO's refusals as API answers: an expired session 401, a refusal `denied`, an outage 503."""
    try:
        yield
    except SessionExpired as e:
        raise ApiError(str(e), 401) from None
    except PermissionDenied as e:
        raise ApiError("Not found" if denied == 404 else str(e), denied) from None
    except OmeroError as e:
        raise ApiError(str(e), 503 if e.transient else 502) from None


@contextmanager
def _omero_session(user: User):
    key = user.omero_key and crypto.decrypt(user.omero_key, current_app.config["ENCRYPTION_KEY"])
    if not key:
        raise SessionExpired()
    with current_app.extensions["services"].omero.session(key) as omero:
        yield omero
