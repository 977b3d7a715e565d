"""Custody of a job's files in OMERO: each original kept beside the images converted from it, the
conversion's spectra attached, and what the job's record says OMERO holds.

A converted image is not the file the microscope wrote; the original's bytes stay in OMERO as a file
attachment of every image made from it (unless the facility turned that off), so OMERO, not the
transfer server, is where a researcher's data lives. A file OMERO imported as it is (OME-TIFF, CZI)
is its own fileset: nothing more is stored.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import converters
from app.core.models import Job
from app.core.omero.base import (
    ATTACHMENT_NAMESPACE, FILESET, ORIGINAL, ORIGINAL_NAMESPACE, FileToAttach, ImageRef, OmeroError, Progress,
    StoredFile,
)


def keep(omero, job: Job, conversion: converters.Conversion, paths: Sequence[Path], images: list[ImageRef],
         keep_originals: bool, progress: Progress) -> dict:
    """Store what OMERO does not hold yet (a rerun finds what an earlier run stored) and return the
    job record's `originals` and `attachments`. Raises OmeroError when an original cannot be kept."""
    group_id, image_ids = job.batch.group_id, [image.id for image in images]
    expected = {Path(f.name).name: f.sha1 for f in job.files}
    # An original stored with other bytes (a broken earlier run) does not count: it is stored again.
    held = [f for f in omero.stored_files(group_id, image_ids[0]) if f.kind != ORIGINAL or expected.get(f.name) == f.sha1]
    originals: list[StoredFile] = []
    if conversion.status == "passthrough":
        originals = [f for f in held if f.kind == FILESET][:1]
    elif keep_originals:
        wanted = [FileToAttach(path, Path(f.name).name, ORIGINAL) for f, path in zip(job.files, paths)]
        originals = _attach(omero, group_id, image_ids, wanted, held, ORIGINAL_NAMESPACE, progress)
        for stored in originals:
            if stored.sha1 != expected[stored.name]:
                raise OmeroError(f"OMERO's copy of {stored.name} does not match the file sent (checksum differs): "
                                 "retry the import")
    wanted = [FileToAttach(a.path, a.path.name, a.kind) for a in conversion.attachments]
    attached = _attach(omero, group_id, image_ids, wanted, held, ATTACHMENT_NAMESPACE, progress)
    return {
        "originals": [{"name": Path(f.name).name, "size": s.size, "sha1": s.sha1, "file_id": s.id}
                      for f, s in zip(job.files, originals)],
        "attachments": [{"name": s.name, "kind": s.kind, "title": a.title, "file_id": s.id}
                        for a, s in zip(conversion.attachments, attached)],
    }


def _attach(omero, group_id: int, image_ids: list[int], wanted: list[FileToAttach], held: list[StoredFile],
            namespace: str, progress: Progress) -> list[StoredFile]:
    have = {(f.name, f.kind): f for f in held}
    missing = [w for w in wanted if (w.name, w.kind) not in have]
    if missing:
        for stored in omero.attach_files(group_id, image_ids, missing, namespace, progress):
            have[(stored.name, stored.kind)] = stored
    return [have[(w.name, w.kind)] for w in wanted]

