"""Import one fileset through OMERO's ManagedRepository API, without Java.

What `omero import` does, minus Bio-Formats on our side: describe the fileset, upload each file
through the import process while hashing it, let the server verify the SHA-1s and run the import,
then wait for its answer. Annotations travel in the import settings, so images never exist in OMERO
without them.
"""
from __future__ import annotations

import hashlib
import platform
from collections.abc import Sequence
from pathlib import Path

import omero
import omero.callbacks
from omero.cmd import ERR
from omero.grid import ImportSettings
from omero.model import (
    ChecksumAlgorithmI, DatasetI, FilesetEntryI, FilesetI, MapAnnotationI, NamedValue, TagAnnotationI,
    UploadJobI,
)
from omero.rtypes import rbool, rstring
from omero_version import omero_version

from app.omero.base import (
    CLIENT_KV_NAMESPACE, METADATA_NAMESPACE, PROVENANCE_NAMESPACE, Annotations, OmeroError, Progress,
    iter_files_in_blocks,
)
from app.omero.omeropy_queries import SHA1_HASHER, TAGS_BY_TEXT, tags_params

BLOCK = 1 << 20  # bytes per write: large enough for throughput, small enough for smooth progress


class ImportTimedOut(OmeroError):
    """OMERO took longer than we wait; it may still finish, and a rerun will then find the image."""

    transient = True


def map_annotation(ns: str, pairs) -> MapAnnotationI:
    ann = MapAnnotationI()
    ann.setNs(rstring(ns))
    ann.setMapValue([NamedValue(str(k), str(v)) for k, v in pairs])
    return ann


def existing_tag(query, ctx: dict, owner: int, text: str) -> TagAnnotationI | None:
    """A tag with this text the user may link in the call's group, found by a targeted query."""
    tags = query.findAllByQuery(TAGS_BY_TEXT, tags_params(text), ctx)
    own = [t for t in tags if t.getDetails().getOwner().getId().getValue() == owner]
    # Another member's tag is reused only where the group's permissions let us link to it.
    linkable = own or [t for t in tags if t.getDetails().getPermissions().canLink()]
    if not linkable:
        return None
    return TagAnnotationI(linkable[0].getId().getValue(), False)  # unloaded: link, do not copy


def build_annotations(query, ctx: dict, owner: int, annotations: Annotations) -> list:
    """The annotation objects for ImportSettings.userSpecifiedAnnotationList."""
    out = []
    if annotations.key_values:
        out.append(map_annotation(CLIENT_KV_NAMESPACE, annotations.key_values))
    for text in dict.fromkeys(t.strip() for t in annotations.tags if t.strip()):
        tag = existing_tag(query, ctx, owner, text)
        if tag is None:
            tag = TagAnnotationI()
            tag.setTextValue(rstring(text))
        out.append(tag)
    if annotations.metadata:
        out.append(map_annotation(METADATA_NAMESPACE, annotations.metadata.items()))
    if annotations.provenance:
        out.append(map_annotation(PROVENANCE_NAMESPACE, annotations.provenance.items()))
    return out


def build_fileset(files: Sequence[Path]) -> FilesetI:
    fileset = FilesetI()
    for path in files:
        entry = FilesetEntryI()
        # The server derives the fileset's directory layout from the client paths.
        entry.setClientPath(rstring(str(Path(path).resolve())))
        fileset.addFilesetEntry(entry)
    job = UploadJobI()
    job.setVersionInfo([
        NamedValue("omero.version", omero_version),
        NamedValue("os.name", platform.system()),
        NamedValue("os.version", platform.release()),
        NamedValue("os.architecture", platform.machine()),
    ])
    fileset.linkJob(job)
    return fileset


def build_settings(dataset_id: int, name: str, description: str, annotation_list: list) -> ImportSettings:
    settings = ImportSettings()
    settings.userSpecifiedTarget = DatasetI(dataset_id, False)
    settings.userSpecifiedName = rstring(name)
    settings.userSpecifiedDescription = rstring(description)
    settings.userSpecifiedAnnotationList = annotation_list
    settings.userSpecifiedPixels = None
    settings.doThumbnails = rbool(True)
    settings.noStatsInfo = rbool(False)
    algorithm = ChecksumAlgorithmI()
    algorithm.setValue(rstring(SHA1_HASHER))
    settings.checksumAlgorithm = algorithm
    return settings


def upload(proc, files: Sequence[Path], progress: Progress) -> list[str]:
    """Write each file through its uploader in blocks; return the SHA-1s we computed on the way."""
    total = sum(Path(p).stat().st_size for p in files)
    sent = 0
    progress(0, total)
    hashes = []
    for i, path in enumerate(files):
        rfs = proc.getUploader(i)
        try:
            sha1 = hashlib.sha1()
            offset = 0
            for block in iter_files_in_blocks(Path(path), BLOCK):
                rfs.write(block, offset, len(block))
                sha1.update(block)
                offset += len(block)
                sent += len(block)
                progress(sent, total)
            if offset == 0:
                rfs.write(b"", 0, 0)  # an empty file must still exist on the server
            hashes.append(sha1.hexdigest())
        finally:
            rfs.close()
    return hashes


def import_fileset(
    client, ctx: dict, dataset_id: int, files: Sequence[Path], *, name: str, description: str,
    annotation_list: list, progress: Progress, timeout_seconds: float,
) -> tuple[list[int], list[str]]:
    """Run one import; return the new image ids and the SHA-1 of each file."""
    mrepo = client.getManagedRepository()
    if mrepo is None:
        raise OmeroError("This OMERO server has no managed repository to import into")
    settings = build_settings(dataset_id, name, description, annotation_list)
    # ctx carries the group: the fileset, its images and annotations land in it.
    proc = mrepo.importFileset(build_fileset(files), settings, ctx)
    handle = callback = None
    try:
        hashes = upload(proc, files, progress)
        handle = proc.verifyUpload(hashes)
        callback = omero.callbacks.CmdCallbackI(client, handle)
        loops = max(1, int(timeout_seconds))
        try:
            response = callback.loop(loops, 1000)
        except omero.LockTimeout as e:
            raise ImportTimedOut(
                f"OMERO did not finish importing {name} within {loops // 60} minutes"
            ) from e
        if isinstance(response, ERR):
            detail = (response.parameters or {}).get("message") or f"{response.category}/{response.name}"
            raise OmeroError(f"OMERO could not import {name}: {detail}")
        image_ids = [p.getImage().getId().getValue() for p in response.pixels]
        return list(dict.fromkeys(image_ids)), hashes
    finally:
        if callback is not None:
            callback.close(True)  # also closes the handle
        elif handle is not None:
            handle.close()
        proc.close()
