"""The duplicate check before sending: the client hashes a job's files locally, and OMERO is asked
whether the user already holds that content in the import's group, so no byte of it travels again."""
from __future__ import annotations

import re

from flask import current_app, request

from app.api import bp
from app.api.common import _db, _own, _staging
from app.api.files import content_sha1
from app.auth.guards import login_required
from app.core import crypto
from app.core import jobs as job_states
from app.core.db import utcnow
from app.core.models import Job, JobState, User
from app.core.omero.base import OmeroError, one_import
from app.errors import ApiError

SHA1 = re.compile(r"[0-9a-f]{40}")


def may_be_in_omero(owner: User, totals: list[int]) -> list[bool]:
    """For jobs given by their sizes in bytes: whether OMERO may hold that content for the owner. A
    copy has the size of what it copies, so a job is a candidate only when OMERO holds a fileset file
    or a portal import's source of that size: only candidates are hashed before sending. One query for
    the whole batch; when OMERO cannot answer, every job is a candidate."""
    key = owner.omero_key and crypto.decrypt(owner.omero_key, current_app.config["ENCRYPTION_KEY"])
    if not key or not totals:
        return [True] * len(totals)
    try:
        with current_app.extensions["services"].omero.session(key) as omero:
            held = omero.content_sizes(set(totals))
    except OmeroError as e:
        current_app.logger.warning("duplicate sieve skipped for %s: %s", owner.username, e)
        return [True] * len(totals)
    return [total in held for total in totals]


@bp.post("/jobs/<int:job_id>/check")
@login_required
def check_job(job_id: int):
    """Take the SHA-1s of a job's files still to send; a job whose content OMERO already holds in the
    import's group ends "duplicate" at once. Images of that content in the user's other groups do not
    stop the import: they are listed as `elsewhere` (and said in the job's message)."""
    body = request.get_json(silent=True)
    claimed = body.get("files") if isinstance(body, dict) else None
    if not isinstance(claimed, list) or not all(
            isinstance(f, dict) and isinstance(f.get("id"), int) and isinstance(f.get("sha1"), str)
            and SHA1.fullmatch(f["sha1"]) for f in claimed):
        raise ApiError("files must list {id, sha1} for the job's files (SHA-1 as 40 lowercase hex digits)")
    with _db() as db:
        job = _own(db, Job, job_id)
        if job.state != JobState.UPLOADING:
            raise ApiError(f"This job is {job.state}: there is nothing left to check", 409, "not_waiting")
        sha1s = {f["id"]: f["sha1"] for f in claimed}
        missing = [f.name for f in job.files if not f.completed_at and f.id not in sha1s]
        if missing or set(sha1s) - {f.id for f in job.files}:
            raise ApiError("Give the SHA-1 of each of this job's files still to send, and of no other file")
        content = content_sha1([f.sha1 if f.completed_at else sha1s[f.id] for f in job.files])
        owner = db.get(User, job.owner_id)
        key = owner.omero_key and crypto.decrypt(owner.omero_key, current_app.config["ENCRYPTION_KEY"])
        group_id = job.batch.group_id
    here, elsewhere, checked = [], [], False
    if key:
        try:
            with current_app.extensions["services"].omero.session(key) as omero:
                # a half-finished import (never marked complete) is no copy to rely on
                found = [i for i in omero.find_images(None, content) if i.complete]
                here = [i for i in omero.find_images(group_id, content) if i.complete] if found else []
            checked = True
        except OmeroError as e:  # the worker checks again before importing: sending may go on
            current_app.logger.warning("duplicate check of job %s skipped: %s", job_id, e)
    with _db() as db:
        job = _own(db, Job, job_id)
        if here and job.state == JobState.UPLOADING:
            for f in job.files:  # what OMERO holds, so the client may delete its copy (/confirm)
                f.sha1 = f.sha1 if f.completed_at else sha1s[f.id]
            job_states.record(db, job, state=JobState.DUPLICATE, content_sha1=content, progress=1.0,
                              message=f"Already in OMERO as image {here[0].id} ({here[0].name}): nothing was sent",
                              image_ids=[i.id for i in one_import(here, here[0])], link=here[0].url,
                              images=[{"id": i.id, "name": i.name, "url": i.url} for i in one_import(here, here[0])],
                              finished_at=utcnow())
            db.commit()
            _staging().remove_job(job.id)
        elif checked and job.state == JobState.UPLOADING:
            ids = {i.id for i in here}
            elsewhere = [{"id": i.id, "name": i.name, "url": i.url} for i in found if i.id not in ids]
            if elsewhere:
                job_states.record(db, job, message=(
                    f"Also in OMERO in another of your groups (image {elsewhere[0]['id']}, {elsewhere[0]['name']}): "
                    f"it is imported into {job.batch.group_name} as well"))
                db.commit()
        return {"job": job.public(), "checked": checked, "elsewhere": elsewhere}
