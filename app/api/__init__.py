"""The JSON API the page (and scripts) use: batches, resumable file transfer, jobs, live events.

Every query is scoped to the signed-in user; another user's ids answer 404, as if they did not exist.
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager

from flask import Blueprint, current_app, g, request
from sqlalchemy import func, or_, select, text
from werkzeug.exceptions import ClientDisconnected

from app.auth import login_required
from app.core import crypto
from app.core import jobs as job_states
from app.core.db import utcnow
from app.core.models import Batch, Job, JobEvent, JobFile, JobState, User
from app.core.omero.base import OmeroError, PermissionDenied, SessionExpired
from app.core.staging import BLOCK, safe_name
from app.errors import ApiError
from app.events import sse_response
from converters import FileGroup, group_files
from converters.grouping import name_problem, shown_name

bp = Blueprint("api", __name__)

MAX_FILES = 10_000
MAX_PAIRS = 50


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
    return {"id": f.id, "name": f.name, "size": f.size, "received": received, "complete": f.completed_at is not None}


def _job_json(job: Job) -> dict:
    return {**job.public(), "files": [_file_json(f) for f in job.files]}


def _batch_json(db, batch: Batch) -> dict:
    cursor = db.scalar(select(func.max(JobEvent.id)).where(JobEvent.owner_id == batch.owner_id)) or 0
    return {
        "id": batch.id, "owner_id": batch.owner_id, "created_by_id": batch.created_by_id, "group_id": batch.group_id, "group_name": batch.group_name,
        "key_values": batch.key_values, "folder": batch.folder, "created_at": batch.created_at.isoformat() + "Z",
        "jobs": [_job_json(job) for job in batch.jobs], "cursor": cursor,
    }


@bp.get("/me")
@login_required
def me():
    """Tell who is signed in, their OMERO groups and the CSRF token for state-changing calls."""
    from flask_wtf.csrf import generate_csrf

    return {"username": g.user.username, "full_name": g.user.full_name, "groups": g.user.groups,
            "csrf_token": generate_csrf(), "max_file_size": current_app.config["MAX_FILE_SIZE"],
            "batch_keys": current_app.config["BATCH_KEYS"],
            # the e-mail box: shown ticked as last time; off without an address or a mail server
            "notify_imports": g.user.notify_imports, "can_notify": bool(g.user.email and current_app.config["SMTP_HOST"]),
            "notify_after_minutes": current_app.config["NOTIFY_AFTER_MINUTES"]}


def _own_group(group_id, status: int, owner: User | None = None) -> dict:
    group = next((grp for grp in (owner or g.user).groups if grp["id"] == group_id), None)
    if group is None:
        raise ApiError("Choose one of your OMERO groups", status)
    return group


def _validated_files(files) -> list[dict]:
    if not isinstance(files, list) or not 0 < len(files) <= MAX_FILES:
        raise ApiError(f"files must list between 1 and {MAX_FILES} files")
    seen = set()
    for f in files:
        if (not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"]
                or len(f["name"]) > 4096
                or not isinstance(f.get("size"), int) or isinstance(f["size"], bool) or f["size"] < 0):
            raise ApiError("Each file needs a name and a size in bytes")
        if f["name"] in seen:
            raise ApiError(f"{shown_name(f['name'])} is listed twice: each file can be sent once per import")
        seen.add(f["name"])
    return files


def _grouped(sizes: dict[str, int]) -> list[FileGroup]:
    """The jobs these files (name -> size) make, by path; a group with a name the portal refuses, or an
    empty file, cannot be imported. A folder's system files and files the portal does not read are
    skipped, not refused."""
    groups = group_files(sorted(sizes), skip_unread=True)
    for grp in groups:
        grp.error = next(filter(None, map(name_problem, grp.files)), None) or grp.error
        if grp.error:
            grp.skipped = None
        elif not grp.skipped:
            grp.error = next((f"{shown_name(n.rsplit('/', 1)[-1])} is empty (0 bytes): there is nothing to "
                              "import; copy it again from where it was made" for n in grp.files if sizes[n] == 0), None)
    return groups


def _skipped_json(groups: list[FileGroup]) -> list[dict]:
    return [{"name": shown_name(grp.files[0]), "reason": grp.skipped} for grp in groups if grp.skipped]


def _too_big(name: str, size: int) -> str | None:
    limit = current_app.config["MAX_FILE_SIZE"]
    if size <= limit:
        return None
    return f"{name} is {size:,} bytes; the portal accepts files up to {limit:,} bytes"


def _validated_batch(body, owner: User) -> tuple[dict, list, str | None, list[dict]]:
    if not isinstance(body, dict):
        raise ApiError("Send a JSON object")
    group = _own_group(body.get("group_id"), 400, owner)
    pairs = body.get("key_values") or []
    if not isinstance(pairs, list) or len(pairs) > MAX_PAIRS:
        raise ApiError(f"key_values must be a list of at most {MAX_PAIRS} [key, value] pairs")
    clean_pairs = []
    for pair in pairs:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(p, str) and p.strip() and p.isprintable() for p in pair)
                or len(pair[0]) > 255 or len(pair[1]) > 1024):
            raise ApiError("Each key-value pair needs a key (up to 255 characters) and a value (up to 1024)")
        clean_pairs.append([_batch_key(pair[0].strip()), pair[1].strip()])
    folder = body.get("folder")
    if folder is not None and (not isinstance(folder, str) or len(folder) > 1024 or not folder.isprintable()
                               or "/" in folder or "\\" in folder or folder.strip(".") == ""):
        raise ApiError("folder must be the name of one folder (no '/', no '..', no control characters)")
    files = _validated_files(body.get("files"))
    too_big = next((message for f in files if (message := _too_big(f["name"], f["size"]))), None)
    if too_big:
        raise ApiError(too_big, 413)
    return group, clean_pairs, folder, files


def _batch_key(key: str) -> str:
    """Keys are the facility's vocabulary (PORTAL_BATCH_KEYS), so OMERO searches find them."""
    keys = current_app.config["BATCH_KEYS"]
    if key not in keys:
        raise ApiError(f"{key!r} is not a key this facility uses; choose one of: {', '.join(keys)}")
    return key


@bp.post("/plan")
@login_required
def plan():
    """Group files into jobs as an import would, and say which cannot be imported and why; sends nothing."""
    body = request.get_json(silent=True)
    files = _validated_files(body.get("files") if isinstance(body, dict) else None)
    sizes = {f["name"]: f["size"] for f in files}
    groups = []
    for grp in _grouped(sizes):
        error = grp.error or (None if grp.skipped else next((m for n in grp.files if (m := _too_big(n, sizes[n]))), None))
        groups.append({"files": [{"name": shown_name(n), "size": sizes[n]} for n in grp.files], "kind": grp.kind,
                       "size": sum(sizes[n] for n in grp.files), "error": error, "skipped": grp.skipped})
    return {"groups": groups, "count": len(sizes), "total_size": sum(sizes.values()),
            "importable": sum(1 for grp in groups if grp["error"] is None and grp["skipped"] is None),
            "skipped": sum(1 for grp in groups if grp["skipped"])}


@bp.get("/key-values")
@login_required
def key_values():
    """List the values the user already gave a key in one of their groups, read from OMERO."""
    group = _own_group(request.args.get("group_id", type=int), 403)
    key = _batch_key(request.args.get("key", ""))
    with _omero_errors(denied=403), _omero_session(g.user) as omero:
        values = omero.key_values(group["id"], key)
    return {"group_id": group["id"], "key": key, "values": values}


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


@bp.post("/batches")
@login_required
def create_batch():
    """Create a batch: one job per file group, checked before any byte is sent."""
    return new_batch(g.user, request.get_json(silent=True))


def new_batch(owner: User, body):
    """The batch `owner` will own, created by the signed-in user (the owner, or staff importing as)."""
    group, pairs, folder, files = _validated_batch(body, owner)
    sizes = {f["name"]: f["size"] for f in files}
    groups = _grouped(sizes)
    skipped, groups = _skipped_json(groups), [grp for grp in groups if not grp.skipped]
    if not groups:
        raise ApiError(f"None of these {len(skipped)} files is one the portal imports "
                       f"({', '.join(sorted({s['reason'] for s in skipped}))}): choose the image files")
    needed = sum(sizes[n] for grp in groups if not grp.error for n in grp.files)
    with _db() as db:
        _one_at_a_time(db)
        # the owner's own wish, kept as their setting; staff importing for them decide nothing for them
        notify = body.get("notify") is True and owner.id == g.user.id
        batch = Batch(owner_id=owner.id, created_by_id=g.user.id, group_id=group["id"],
                      group_name=group["name"], key_values=pairs, folder=folder, notify=notify)
        if owner.id == g.user.id and isinstance(body.get("notify"), bool):
            db.get(User, owner.id).notify_imports = notify
        db.add(batch)
        db.flush()
        for grp in groups:
            job = Job(batch_id=batch.id, owner_id=owner.id, kind=grp.kind, total_size=sum(sizes[n] for n in grp.files),
                      state=JobState.FAILED if grp.error else JobState.UPLOADING, message=grp.error or "",
                      can_retry=not grp.error)
            db.add(job)
            db.flush()
            taken: set[str] = set()
            for name in grp.files:
                stored = safe_name(shown_name(name))
                while stored.lower() in taken:  # two names that clean to the same one
                    stored = f"_{stored}"
                taken.add(stored.lower())
                db.add(JobFile(job_id=job.id, name=shown_name(name), stored_name=stored, size=sizes[name]))
            job_states.record(db, job)
        db.flush()
        _staging().check_room(needed, _staging().promised(db) - needed)  # the new jobs promise `needed`
        db.commit()
        answer = {**_batch_json(db, batch), "skipped": skipped}
    sending = [job for job in answer["jobs"] if job["state"] == JobState.UPLOADING]
    for job, maybe in zip(sending, duplicates.may_be_in_omero(owner, [job["total_size"] for job in sending])):
        job["may_be_in_omero"] = maybe  # if not, the client sends at once and hashes meanwhile
    return answer, 201


def _one_at_a_time(db) -> None:
    """Accept batches one at a time, so two cannot both count on the same free bytes. SQLite lets one
    writer at a time anyway (the first insert waits for the other's commit); PostgreSQL is told to."""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ROOM_LOCK})


ROOM_LOCK = 0x706F7274616C  # any constant: the key of the advisory lock on the staging disk's room


@bp.get("/batches")
@login_required
def list_batches():
    """List the user's recent batches with their jobs' states."""
    with _db() as db:
        batches = db.scalars(select(Batch).where(Batch.owner_id == g.user.id).order_by(Batch.id.desc()).limit(50))
        return {"batches": [
            {"id": b.id, "created_at": b.created_at.isoformat() + "Z", "group_name": b.group_name,
             "folder": b.folder, "states": count_states(b), "to_check": count_to_check(b)} for b in batches]}


def count_states(batch: Batch) -> dict:
    counts: dict[str, int] = {}
    for job in batch.jobs:
        counts[job.state] = counts.get(job.state, 0) + 1
    return counts


def count_to_check(batch: Batch) -> int:
    """How many of the batch's imported jobs carry warnings (date, microscope or pixel size unknown):
    "imported" counts them too, and a summary must not look plain green because of them."""
    return sum(1 for job in batch.jobs if job.state == JobState.IMPORTED and job.warnings)


@bp.get("/batches/<int:batch_id>")
@login_required
def get_batch(batch_id: int):
    """Return a batch with its jobs, files and how many bytes of each the server holds."""
    with _db() as db:
        return _batch_json(db, _own(db, Batch, batch_id))


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
    held = _staging().write(file_id, job_id, stored_name, offset, _body_blocks(length), size)
    return {"id": file_id, "received": held, "size": size}


def _body_blocks(length: int):
    # The server's input stream itself, read no further than Content-Length (as WSGI allows):
    # request.stream would wrap it and copy every block twice more
    stream_ = request.environ["wsgi.input"]
    remaining = length
    while remaining > 0:
        try:
            block = stream_.read(min(BLOCK, remaining))
        except (OSError, ClientDisconnected):  # the connection broke, or went silent (app.slow_clients)
            block = b""
        if not block:
            break  # the client went away: keep what arrived
        remaining -= len(block)
        yield block


@bp.post("/files/<int:file_id>/complete")
@login_required
def complete_file(file_id: int):
    """Check the whole file against the client's SHA-1; a job whose files all arrived is queued."""
    claimed = str((request.get_json(silent=True) or {}).get("sha1", "")).lower()
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
        actual = _staging().sha1(f.id, job.id, f.stored_name)
        if claimed != actual:
            _staging().reset(f.id, job.id, f.stored_name)
            raise ApiError("The file arrived damaged (its SHA-1 does not match): it will be sent again", 422)
        f.sha1, f.completed_at = actual, utcnow()
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


@bp.post("/jobs/<int:job_id>/cancel")
@login_required
def cancel_job(job_id: int):
    """Cancel a job that is still being sent or waiting in the queue."""
    with _db() as db:
        job = _own(db, Job, job_id)
        job_states.cancel(db, job, _staging())
        return job.public()


@bp.post("/jobs/<int:job_id>/retry")
@login_required
def retry_job(job_id: int):
    """Queue a failed job again; its bytes are still on the server."""
    with _db() as db:
        job = _own(db, Job, job_id)
        job_states.retry(db, job, _staging())
        return job.public()


@bp.get("/events")
@login_required
def events():
    """Stream the user's own job events (SSE), replaying those after Last-Event-ID or ?after=."""
    return sse_response(g.user.id)


from app.api import duplicates, records  # noqa: E402,F401 - their routes join this blueprint
