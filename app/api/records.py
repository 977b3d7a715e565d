"""The job's record: what OMERO holds for a job (images, kept originals, attachments, warnings),
the bytes of each read back from OMERO, and the confirmation a client deletes its copies on.

Every URL here is the portal's own: the bytes come from OMERO (or the embedded store) through the
job owner's session, so a researcher never needs an OMERO id or a session key to get them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

from flask import Response, current_app, g

from app.api import bp
from app.api.common import _db, _job_json, _omero_errors, _omero_session, _own
from app.auth.guards import login_required
from app.core.models import Job, User
from app.core.omero.base import FILESET, PermissionDenied, Session, missing_files
from app.errors import ApiError


@bp.get("/jobs/<int:job_id>")
@login_required
def get_job(job_id: int):
    """Return a job with what OMERO holds for it: images, originals, attachments, and what to check."""
    with _db() as db:
        job = db.get(Job, job_id) if g.user.is_staff else _own(db, Job, job_id)
        if job is None:
            raise ApiError("Not found", 404)
        return job_record(job)


def job_record(job: Job) -> dict:
    base = f"/api/jobs/{job.id}"
    return {
        **_job_json(job),
        "images": [{"id": i["id"], "name": i["name"], "url": f"{base}/images/{i['id']}", "omero_url": i["url"]}
                   for i in job.images],
        "originals": [{"name": f["name"], "size": f["size"], "sha1": f["sha1"], "url": f"{base}/files/{f['file_id']}"}
                      for f in job.originals],
        "attachments": [{"name": a["name"], "kind": a["kind"], "title": a["title"], "url": f"{base}/files/{a['file_id']}"}
                        for a in job.attachments],
        "accounted": job.accounted,
    }


@bp.get("/jobs/<int:job_id>/files/<int:file_id>")
@login_required
def download_file(job_id: int, file_id: int):
    """Send the bytes of an original or an attachment of the job, read from OMERO."""
    with _db() as db:
        job = _own(db, Job, job_id)
        kept = next((f for f in job.originals + job.attachments if f["file_id"] == file_id), None)
        if kept is None:
            raise ApiError("Not found", 404)
        owner, group_id = db.get(User, job.owner_id), job.batch.group_id
    return _stream(owner, lambda omero: (kept["name"], omero.read_file(group_id, file_id)))


@bp.get("/jobs/<int:job_id>/images/<int:image_id>")
@login_required
def download_image(job_id: int, image_id: int):
    """Send the file OMERO imported as this image of the job (its fileset's file)."""
    with _db() as db:
        job = _own(db, Job, job_id)
        image = next((i for i in job.images if i["id"] == image_id), None)
        if image is None:
            raise ApiError("Not found", 404)
        owner, group_id = db.get(User, job.owner_id), job.batch.group_id

    def read(omero):
        stored = next((f for f in omero.stored_files(group_id, image_id) if f.kind == FILESET), None)
        if stored is None:
            raise PermissionDenied(f"OMERO holds no file for image {image_id}")
        return stored.name, omero.read_file(group_id, stored.id)

    return _stream(owner, read)


THUMBNAIL_SIZE = 96  # pixels of a thumbnail's longest side (shown at 64 CSS pixels: sharp on HiDPI screens)
PICTURE_CACHE = "private, max-age=86400"  # an image's picture does not change; only its viewer may keep it


def _job_for_pictures(db, job_id: int) -> Job:
    """The job whose pictures are asked for: the owner's, and any for staff (the staff view shows them)."""
    job = db.get(Job, job_id) if g.user.is_staff else _own(db, Job, job_id)
    if job is None:
        raise ApiError("Not found", 404)
    return job


@bp.get("/jobs/<int:job_id>/images/<int:image_id>/thumbnail")
@login_required
def image_thumbnail(job_id: int, image_id: int):
    """Send OMERO's thumbnail of one of the job's images (the embedded store makes its own)."""
    with _db() as db:
        job = _job_for_pictures(db, job_id)
        if image_id not in {i["id"] for i in job.images or []}:
            raise ApiError("Not found", 404)
        owner, group_id = db.get(User, job.owner_id), job.batch.group_id
    with _omero_errors(denied=404), _omero_session(owner) as omero:
        picture = omero.thumbnail(group_id, image_id, THUMBNAIL_SIZE)
    mimetype = "image/png" if picture.startswith(b"\x89PNG") else "image/jpeg"
    return Response(picture, mimetype=mimetype, headers={"Cache-Control": PICTURE_CACHE})


@bp.get("/jobs/<int:job_id>/plots/<int:file_id>")
@login_required
def spectrum_plot(job_id: int, file_id: int):
    """Send the plot of a spectrum the job attached in OMERO, as a picture."""
    with _db() as db:
        job = _job_for_pictures(db, job_id)
        if not any(a["file_id"] == file_id and a["kind"] == "spectrum-plot" for a in job.attachments or []):
            raise ApiError("Not found", 404)
        owner, group_id = db.get(User, job.owner_id), job.batch.group_id
    response = _stream(owner, lambda omero: (f"plot-{file_id}.png", omero.read_file(group_id, file_id)), "image/png")
    response.headers.set("Cache-Control", PICTURE_CACHE)
    return response


def _stream(owner: User, read: Callable[[Session], tuple[str, Iterator[bytes]]],
            mimetype: str | None = None) -> Response:
    """Stream the blocks `read(session)` names while the OMERO session stays open; an error before
    the first byte is answered as an API error. With a mimetype the bytes are shown, not downloaded."""
    stack = ExitStack()
    try:
        with _omero_errors(denied=404):
            omero = stack.enter_context(_omero_session(owner))
            name, blocks = read(omero)
            first = next(blocks, b"")
    except BaseException:
        stack.close()
        raise

    def body():
        with stack:
            yield first
            yield from blocks

    response = Response(body(), mimetype=mimetype or "application/octet-stream")
    response.headers.set("Content-Disposition", "inline" if mimetype else "attachment", filename=name)
    return response


@bp.get("/jobs/<int:job_id>/confirm")
@login_required
def confirm_job(job_id: int):
    """Ask OMERO itself whether it holds every original file of this job with the same SHA-1 (as
    the imported fileset or a kept original), so a client may delete its local copies."""
    with _db() as db:
        job = _own(db, Job, job_id)
        owner = db.get(User, job.owner_id)
        files = [(f.name, f.sha1) for f in job.files]
    answer = {"in_omero": False, "images": [], "sha1": dict(files), "missing": [name for name, _ in files]}
    if not job.content_sha1:
        return answer | {"reason": "The files have not all arrived"}
    try:
        with _omero_errors(denied=404), _omero_session(owner) as omero:
            # an import that failed half-way left an image without its pixels: not a copy to rely on
            images = [i for i in omero.find_images(None, job.content_sha1) if i.complete]
            missing = missing_files(omero, None, files, images) if images else answer["missing"]
    except ApiError as e:
        if e.status != 401:
            raise
        return answer | {"reason": str(e)}  # no session to ask OMERO with: nothing is confirmed
    answer |= {"in_omero": not missing, "missing": missing,
               "images": [{"id": i.id, "name": i.name, "url": i.url} for i in images]}
    if missing:
        answer["reason"] = f"OMERO does not hold {', '.join(missing)} with the same SHA-1"
        if images and not current_app.config["KEEP_ORIGINALS"]:
            answer["reason"] += (": this portal keeps only the converted image in OMERO, not the original "
                                 "files (PORTAL_KEEP_ORIGINALS is off), so keep your copies")
    return answer
