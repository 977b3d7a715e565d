"""Files beside images in OMERO: originals and spectra stored through a RawFileStore, linked to the
images by FileAnnotations, listed and read back.

omero-py's BlitzGateway.createOriginalFileFromFileObj reads a whole file to hash it and writes 10 KB
blocks; here a file is streamed in MiB blocks and hashed on the way, and OMERO computes its own hash
when the store is saved (RawFileBean, hasher SHA1-160): that is the hash we keep and compare.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import Ice
import omero
from omero.model import ChecksumAlgorithmI, FileAnnotationI, ImageAnnotationLinkI, ImageI, OriginalFileI
from omero.rtypes import rlong, rstring, unwrap

from app.core.omero import omeropy_queries as q
from app.core.omero.base import (
    ATTACHMENT_NAMESPACE, FILESET, ORIGINAL, ORIGINAL_NAMESPACE, FileToAttach, OmeroError, Progress, StoredFile,
    iter_files_in_blocks,
)

log = logging.getLogger(__name__)
BLOCK = 1 << 20  # bytes per RawFileStore call: few round trips, little memory
STORE_PATH = "upload-portal/"  # OriginalFile.path of what the portal stores (the name is the file's)


class StoreRefused(OmeroError):
    """OMERO could not store a file (e.g. its repository is full); worth retrying later."""

    transient = True


def attach(sf, ctx: dict, image_ids: Sequence[int], files: Sequence[FileToAttach], namespace: str,
           progress: Progress) -> list[StoredFile]:
    total, sent, stored = sum(f.path.stat().st_size for f in files), 0, []
    for f in files:
        file_id, sha1, size = _upload(sf, ctx, f, lambda n: progress(sent + n, total))
        sent += size
        annotation = FileAnnotationI()
        annotation.setFile(OriginalFileI(file_id, False))
        annotation.setNs(rstring(namespace))
        annotation.setDescription(rstring(f.kind))
        links = []
        for image_id in image_ids:  # one annotation, linked to every image (saved with the links)
            link = ImageAnnotationLinkI()
            link.setParent(ImageI(image_id, False))
            link.setChild(annotation)
            links.append(link)
        try:
            sf.getUpdateService().saveAndReturnArray(links, ctx)
        except BaseException:
            _discard(sf, ctx, file_id)  # stored but linked to nothing: no one would find it
            raise
        stored.append(StoredFile(file_id, f.name, size, sha1, f.kind))
    return stored


def _upload(sf, ctx: dict, f: FileToAttach, progress) -> tuple[int, str, int]:
    """Write one file through a RawFileStore; return its id, OMERO's SHA-1 and its size. An
    OriginalFile whose bytes did not all arrive intact is deleted: nothing is left behind to retry over."""
    original = OriginalFileI()
    original.setName(rstring(f.name))
    original.setPath(rstring(STORE_PATH))
    original.setSize(rlong(f.path.stat().st_size))
    original.setMimetype(rstring("application/octet-stream"))
    hasher = ChecksumAlgorithmI()
    hasher.setValue(rstring(q.SHA1_HASHER))
    original.setHasher(hasher)
    file_id = sf.getUpdateService().saveAndReturnObject(original, ctx).getId().getValue()
    try:
        ours, theirs, size = _write(sf, ctx, file_id, f, progress)
        if theirs != ours:
            raise StoreRefused(f"OMERO's copy of {f.name} does not match the file sent (checksum differs)")
    except BaseException:
        _discard(sf, ctx, file_id)
        raise
    return file_id, theirs, size


def _write(sf, ctx: dict, file_id: int, f: FileToAttach, progress) -> tuple[str, str | None, int]:
    """Our SHA-1 of the bytes written, the one OMERO computed on save, and the size."""
    store = sf.createRawFileStore()
    try:
        store.setFileId(file_id, ctx)
        ours, offset = hashlib.sha1(), 0
        for block in iter_files_in_blocks(Path(f.path), BLOCK):
            store.write(block, offset, len(block), ctx)
            ours.update(block)
            offset += len(block)
            progress(offset)
        if offset == 0:
            # RawFileBean.save hashes only a store written to: an empty file gets its hash too
            store.write(b"", 0, 0, ctx)
        saved = store.save(ctx)  # OMERO hashes what it holds
    except omero.ResourceError as e:
        raise StoreRefused(f"OMERO could not store {f.name} ({e.message}); its repository may be full") from e
    finally:
        store.close()
    return ours.hexdigest(), unwrap(saved.getHash()) if saved is not None else None, offset


def _discard(sf, ctx: dict, file_id: int) -> None:
    """Delete an OriginalFile nothing links to yet; a failure to do so is logged, not raised over the cause."""
    try:
        sf.getUpdateService().deleteObject(OriginalFileI(file_id, False), ctx)
    except (omero.ServerError, Ice.LocalException) as e:
        log.warning("could not delete the unfinished OMERO file %s: %s", file_id, type(e).__name__)


def stored(query, ctx: dict, image_id: int) -> list[StoredFile]:
    rows = [(*row, None, FILESET) for row in query.projection(q.FILESET_FILES, q.image_params(image_id), ctx)]
    rows += query.projection(q.ATTACHED_FILES, q.attached_params(image_id, [ORIGINAL_NAMESPACE, ATTACHMENT_NAMESPACE]), ctx)
    out = []
    for file_id, name, size, sha1, hasher, ns, kind in (tuple(unwrap(v) for v in row) for row in rows):
        out.append(StoredFile(file_id, name or "", size or 0, sha1 if hasher == q.SHA1_HASHER else "",
                              ORIGINAL if ns == ORIGINAL_NAMESPACE else kind))
    return out


def read(sf, ctx: dict, file_id: int) -> Iterator[bytes]:
    store = sf.createRawFileStore()
    try:
        store.setFileId(file_id, ctx)
        size = store.size(ctx)
    except BaseException:
        store.close()
        raise
    return _blocks(store, size, ctx)


def _blocks(store, size: int, ctx: dict) -> Iterator[bytes]:
    try:
        for offset in range(0, size, BLOCK):
            yield store.read(offset, min(BLOCK, size - offset), ctx)
    finally:
        store.close()
