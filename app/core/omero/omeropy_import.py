"""Import one fileset through OMERO's ManagedRepository API, without Java.

What `omero import` does, minus Bio-Formats on our side: describe the fileset, upload each file
through the import process while hashing it, let the server verify the SHA-1s and run the import,
then wait for its answer. Annotations travel in the import settings, so images never exist in OMERO
without them.
"""
from __future__ import annotations

import hashlib
import logging
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import Ice
import omero
import omero.callbacks
from omero.cmd import ERR
from omero.grid import ImportSettings
from omero.model import (
    ChecksumAlgorithmI, DatasetI, FilesetEntryI, FilesetI, MapAnnotationI, NamedValue, TagAnnotationI, UploadJobI,
)
from omero.rtypes import rbool, rstring
from omero_version import omero_version

from app.core.omero.base import (
    CLIENT_KV_NAMESPACE, METADATA_NAMESPACE, PROVENANCE_NAMESPACE, Annotations, OmeroError, Progress,
    iter_files_in_blocks,
)
from app.core.omero.omeropy_errors import command_failed
from app.core.omero.omeropy_queries import SHA1_HASHER, TAGS_BY_TEXT, tags_params

log = logging.getLogger(__name__)
BLOCK = 1 << 20  # bytes per write: large enough for throughput, small enough for smooth progress


class CommandTimedOut(OmeroError):
    """OMERO took longer than we wait; we cancelled, and a rerun removes what it left and starts again."""

    transient = True


def map_annotation(ns: str, pairs) -> MapAnnotationI:
    ann = MapAnnotationI()
    ann.setNs(rstring(ns))
    ann.setMapValue([NamedValue(str(k), str(v)) for k, v in pairs])
    return ann


def linkable_tag_ids(query, ctx: dict, owner: int, text: str) -> list[int]:
    """Tags with this text the user may link in the call's group, found by a targeted query, oldest
    first: the user's own, else (where the group's permissions allow linking) another member's."""
    tags = query.findAllByQuery(TAGS_BY_TEXT, tags_params(text), ctx)
    own = [t for t in tags if t.getDetails().getOwner().getId().getValue() == owner]
    linkable = own or [t for t in tags if t.getDetails().getPermissions().canLink()]
    return sorted(t.getId().getValue() for t in linkable)


def new_tag(text: str) -> TagAnnotationI:
    tag = TagAnnotationI()
    tag.setTextValue(rstring(text))
    return tag


def build_annotations(annotations: Annotations, tag_ids: list[int]) -> list:
    """The annotation objects for ImportSettings.userSpecifiedAnnotationList; tags by id (unloaded:
    the import links them, it does not copy them)."""
    out = []
    if annotations.key_values:
        out.append(map_annotation(CLIENT_KV_NAMESPACE, annotations.key_values))
    out += [TagAnnotationI(tag_id, False) for tag_id in tag_ids]
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


def wait_for(client, handle, what: str, timeout_seconds: float, poll_seconds: float):
    """The response of a command's handle, waited for at most timeout_seconds.

    CmdCallbackI.block only waits for the server's "finished" call to our callback, and that call
    can be lost (a reconnect, a firewall dropping the server's connection back): so every
    poll_seconds without it, ask the handle itself. The handle is closed on the way out: after
    the end that frees it on the server; before the end (we gave up, or failed) it cancels the
    command (omero.cmd.HandleI.close), which a rerun then cleans up after.
    """
    try:
        callback = omero.callbacks.CmdCallbackI(client, handle)
    except BaseException:
        _close_quietly(handle.close)
        raise
    try:
        deadline = time.monotonic() + timeout_seconds
        while True:
            finished = callback.block(int(poll_seconds * 1000))
            response = callback.getResponse() if finished else handle.getResponse()
            if response is not None:
                return response
            if time.monotonic() >= deadline:
                raise CommandTimedOut(
                    f"OMERO did not finish {what} within {timeout_seconds / 60:.0f} minutes: it was "
                    "stopped and will be tried again")
    finally:
        _close_quietly(lambda: callback.close(True))


def _close_quietly(close) -> None:
    try:
        close()
    except (Ice.LocalException, omero.ServerError) as e:
        # The server drops a session's handles with the session; an error here must not hide the
        # one that brought us here.
        log.info("while closing an OMERO command handle: %s", type(e).__name__)


def import_fileset(
    client, ctx: dict, dataset_id: int, files: Sequence[Path], *, name: str, description: str,
    annotation_list: list, progress: Progress, timeout_seconds: float, poll_seconds: float,
) -> list[int]:
    """Run one import; return the new image ids."""
    mrepo = client.getManagedRepository()
    if mrepo is None:
        raise OmeroError("This OMERO server has no managed repository to import into")
    settings = build_settings(dataset_id, name, description, annotation_list)
    # ctx carries the group: the fileset, its images and annotations land in it.
    proc = mrepo.importFileset(build_fileset(files), settings, ctx)
    try:
        hashes = upload(proc, files, progress)
        handle = proc.verifyUpload(hashes)
        response = wait_for(client, handle, f"importing {name}", timeout_seconds, poll_seconds)
    finally:
        proc.close()
    if isinstance(response, ERR):
        raise command_failed(f"import {name}", response)
    image_ids = [p.getImage().getId().getValue() for p in response.pixels]
    return list(dict.fromkeys(image_ids))
