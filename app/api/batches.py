"""Batches: what the page needs to make one, how files group into jobs (checked before any byte is
sent), creating a batch (also for staff importing as a user) and listing the user's batches."""
from __future__ import annotations

from flask import current_app, g, request
from sqlalchemy import select, text

from app.api import bp, duplicates
from app.api.common import _batch_json, _db, _omero_errors, _omero_session, _own, _staging
from app.auth.guards import login_required
from app.core import jobs as job_states
from app.core.models import Batch, Job, JobFile, JobState, User
from app.core.staging import safe_name
from app.errors import ApiError
from converters import FileGroup, group_files
from converters.grouping import name_problem, shown_name

MAX_FILES = 10_000
MAX_PAIRS = 50


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
    importable = [grp for grp in groups if grp["error"] is None and grp["skipped"] is None]
    # the page hashes ahead only the files that will be checked against OMERO before sending
    for grp, maybe in zip(importable, duplicates.may_be_in_omero(g.user, [grp["size"] for grp in importable])):
        grp["may_be_in_omero"] = maybe
    return {"groups": groups, "count": len(sizes), "total_size": sum(sizes.values()),
            "importable": len(importable),
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
