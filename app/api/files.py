"""Resumable file transfer: how many bytes the server holds, appending a chunk, and the SHA-1 check
that completes a file (a job whose files all arrived is queued)."""
from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import re

from flask import current_app, request
from werkzeug.exceptions import ClientDisconnected

from app.api import bp
from app.api.common import _db, _file_json, _own, _staging
from app.auth.guards import login_required
from app.core import jobs as job_states
from app.core.db import utcnow
from app.core.models import JobFile, JobState
from app.core.staging import BLOCK
from app.errors import ApiError
from app.slow_clients import body_blocks

SHA1 = re.compile(r"[0-9a-f]{40}")


@bp.get("/files/<int:file_id>")
@login_required
def get_file(file_id: int):
    """Say how many bytes of the file the server holds: resume from there."""
    with _db() as db:
        return _file_json(_own(db, JobFile, file_id))


@bp.put("/files/<int:file_id>")
@login_required
def put_file(file_id: int):
    """Append one chunk at ?offset=, which must be the number of bytes the server holds."""
    offset = request.args.get("offset", type=int)
    length = request.content_length
    if offset is None or offset < 0:
        raise ApiError("Give ?offset= (bytes already sent)")
    if length is None:
        raise ApiError("Send a Content-Length", 411)
    if length > current_app.config["MAX_CHUNK"]:
        raise ApiError(f"Send chunks of at most {current_app.config['MAX_CHUNK']:,} bytes", 413)
    with _db() as db:
        f = _own(db, JobFile, file_id)
        if f.job.state != JobState.UPLOADING or f.completed_at:
            raise ApiError(f"This file is not waiting for bytes (its job is {f.job.state})", 409, "not_waiting")
        if offset + length > f.size:
            raise ApiError("More bytes were sent than the file's declared size", 400)
        job_id, stored_name, size = f.job_id, f.stored_name, f.size
    digest = _content_digest(request.headers.get("Content-Digest"))
    with body_blocks(request.environ["wsgi.input"], length, BLOCK) as blocks:
        held = _staging().write(file_id, job_id, stored_name, offset, _until_cut(blocks), size, digest, length)
    return {"id": file_id, "received": held, "size": size}


def _content_digest(header: str | None) -> bytes | None:
    """The chunk's SHA-256 from an RFC 9530 Content-Digest header (`sha-256=:<base64>:`); other
    algorithms are ignored, as the RFC allows."""
    for member in (header or "").split(","):
        name, _, value = member.strip().partition("=")
        if name.strip().lower() == "sha-256":
            value = value.strip()
            try:
                digest = base64.b64decode(value[1:-1], validate=True) if value[:1] == value[-1:] == ":" else b""
            except binascii.Error:
                digest = b""
            if len(digest) != 32:
                raise ApiError("Content-Digest: sha-256 must be 32 bytes in base64 between colons", 400)
            return digest
    return None


def _until_cut(blocks):
    """The chunk's bytes (no further than Content-Length, as WSGI allows) until the connection broke
    or went silent (app.slow_clients): what arrived is kept, and the client resumes from there."""
    try:
        yield from blocks
    except (OSError, ClientDisconnected):
        return


@bp.post("/files/<int:file_id>/complete")
@login_required
def complete_file(file_id: int):
    """Complete a file whose bytes all arrived, with the client's SHA-1 of it (not needed when every
    chunk came with a matching Content-Digest: the server then computed it and checks the client's
    against it); a job whose files all arrived is queued."""
    claimed = str((request.get_json(silent=True) or {}).get("sha1") or "").lower()
    with _db() as db:
        f = _own(db, JobFile, file_id)
        job = f.job
        if f.completed_at:
            return _file_json(f)
        if job.state != JobState.UPLOADING:
            raise ApiError(f"This file's job is {job.state}", 409, "not_waiting")
        if f.size == 0:  # nothing was PUT, but the job still needs the (empty) file
            _staging().path(job.id, f.stored_name).parent.mkdir(parents=True, exist_ok=True)
            _staging().path(job.id, f.stored_name).touch()
        held = _staging().received(job.id, f.stored_name)
        if held != f.size:
            raise ApiError(f"The server holds {held:,} of {f.size:,} bytes: send the rest first", 409, "incomplete")
        if claimed and not SHA1.fullmatch(claimed):
            raise ApiError("sha1 must be 40 hexadecimal digits", 400)
        checked = _staging().checked_sha1(f.id, job.id, f.stored_name)
        if not claimed and checked is None:
            raise ApiError("Send the file's SHA-1 to complete it (its chunks were not all checked as they "
                           "arrived)", 409, "sha1_needed")
        if claimed and checked is not None and claimed != checked:
            _staging().reset(f.id, job.id, f.stored_name)
            raise ApiError("The file arrived damaged (its SHA-1 does not match): it will be sent again", 422)
        try:
            _staging().persist(job.id, f.stored_name)
        except OSError as e:  # the disk did not take the bytes (after a failed flush Linux drops them)
            _staging().reset(f.id, job.id, f.stored_name)
            if e.errno == errno.ENOSPC:
                raise ApiError("The transfer server's disk is full: send the file again later or ask the "
                               "facility staff", 507) from None
            raise ApiError("The transfer server could not write the file to its disk: send it again", 422) from None
        # a SHA-1 the server did not compute as the bytes arrived is the client's word: the worker
        # checks the staged file against it before anything is imported
        f.sha1, f.completed_at = checked or claimed, utcnow()
        if all(other.completed_at for other in job.files):
            job.content_sha1 = content_sha1([other.sha1 for other in job.files])
            job_states.record(db, job, state=JobState.QUEUED, message="Waiting for a worker")
            db.commit()
            job_states.enqueue(db, [job])
        db.commit()
        return _file_json(f)


def content_sha1(file_sha1s: list[str]) -> str:
    """What a job's content is known by: the file's SHA-1, or for a group a SHA-1 over its files'."""
    if len(file_sha1s) == 1:
        return file_sha1s[0]
    return hashlib.sha1("\n".join(file_sha1s).encode()).hexdigest()
