"""What the fake OMERO needs to keep files beside images: OriginalFiles written through a strict
RawFileStore (the server hashes what it holds on save, as omero-server ome/services/RawFileBean does,
and only when something was written: an empty file must be written once), FileAnnotations linked
to images, the two queries that list them, and reading a file back.

Kept apart from fake_omero.py so that the server's other parts can change without touching this.
"""
from __future__ import annotations

import hashlib
from unittest import mock

import imagecodecs
import numpy as np

import omero
from omero.api import RawFileStorePrx, ThumbnailStorePrx
from omero.model import FileAnnotationI, ImageAnnotationLinkI, OriginalFileI
from omero.rtypes import rlong, rstring, unwrap

from app.core.omero import omeropy_queries as q

from .fake_omero_model import Row, Store, User

SHA1_HASHER_ID = 7  # the ChecksumAlgorithm row for "SHA1-160" (as in fake_omero)


def strict(cls):
    return mock.create_autospec(cls, instance=True, spec_set=True)


class FakeFiles:
    def __init__(self, store: Store, log: list):
        self.store, self.log = store, log
        self.full = False  # the repository is full: writes fail as OMERO's ResourceError
        self.corrupt_writes = False  # flip the first byte of every block, as a broken network would
        self.keep_bytes = True  # False: hash and count what is written, keep nothing (benchmarks of GiB)

    def save_original(self, user: User, gid: int, obj: OriginalFileI) -> OriginalFileI:
        hasher = unwrap(obj.getHasher().getValue()) if obj.getHasher() is not None else None
        assert unwrap(obj.getPath()) is not None, "OriginalFile.path is required"
        row = Row("file", self.store.allocate(), user.id, gid, {
            "name": unwrap(obj.getName()), "hash": unwrap(obj.getHash()), "hasher": hasher,
            "hasher_id": SHA1_HASHER_ID if hasher == q.SHA1_HASHER else None, "size": unwrap(obj.getSize()) or 0,
            "data": bytearray(), "written": 0, "digest": hashlib.sha1()})
        self.store.commit([row])
        return self._original(row)

    def _original(self, row: Row) -> OriginalFileI:
        f = OriginalFileI(row.id, True)
        f.setName(rstring(row.fields["name"]))
        f.setSize(rlong(row.fields["size"]))
        f.setHash(rstring(row.fields["hash"]) if row.fields["hash"] is not None else None)
        return f

    def save_links(self, user: User, gid: int, links: list) -> list:
        """ImageAnnotationLinks to new FileAnnotations; one annotation shared by several links is saved once."""
        rows, made = [], {}
        for link in links:
            assert isinstance(link, ImageAnnotationLinkI), f"fake OMERO cannot save {link!r}"
            image = self.store.rows.get(unwrap(link.getParent().getId()))
            if image is None or image.kind != "image" or image.group != gid:
                raise omero.ValidationException(None, None, "No such image in this group")
            if image.owner != user.id and self.store.groups[gid].perms[2:4] not in ("ra", "rw"):
                raise omero.SecurityViolation(None, None, "Cannot annotate another user's image")
            ann = link.getChild()
            assert isinstance(ann, FileAnnotationI) and ann.getId() is None, "links to new FileAnnotations only"
            if id(ann) not in made:
                file_row = self.store.rows.get(unwrap(ann.getFile().getId()))
                if file_row is None or file_row.kind != "file" or file_row.group != gid:
                    raise omero.ValidationException(None, None, "No such file in this group")
                made[id(ann)] = Row("fileann", self.store.allocate(), user.id, gid, {
                    "file": file_row.id, "ns": unwrap(ann.getNs()), "description": unwrap(ann.getDescription())})
                rows.append(made[id(ann)])
            rows.append(Row("ialink", self.store.allocate(), user.id, gid,
                            {"parent": image.id, "child": made[id(ann)].id}))
        self.store.commit(rows)
        self.log.append(("update.saveAndReturnArray", len(links)))
        return [ImageAnnotationLinkI(r.id, False) for r in rows if r.kind == "ialink"]

    def thumbnail_store(self, user_of) -> ThumbnailStorePrx:
        """A ThumbnailStore (omero-blitz ThumbnailStoreI over ome.api.ThumbnailStore): setPixelsId answers
        False while the pixels have no rendering settings (an import nobody has viewed), and a thumbnail
        needs them: resetDefaults makes them. A thumbnail is a JPEG whose longest side is the size asked."""
        prx = strict(ThumbnailStorePrx)
        state = {"row": None}

        def set_pixels_id(pixelsId, _ctx=None):
            user = user_of()
            row = self.store.rows.get(pixelsId)
            if row is None or row.kind != "pixels" or row.group not in self.store.groups_in_scope(user, _ctx):
                raise omero.SecurityViolation(None, None, f"No Pixels {pixelsId} in this context")
            state["row"] = row
            self.log.append(("thumbs.setPixelsId", pixelsId))
            return bool(row.fields.get("rendering"))

        def reset_defaults(_ctx=None):
            user_of()
            assert state["row"] is not None, "setPixelsId first"
            state["row"].fields["rendering"] = True
            self.log.append(("thumbs.resetDefaults",))

        def by_longest_side(size, _ctx=None):
            user_of()
            row = state["row"]
            assert row is not None, "setPixelsId first"
            if not row.fields.get("rendering"):
                raise omero.ResourceError(None, None, f"Pixels {row.id} have no rendering settings")
            self.log.append(("thumbs.getThumbnailByLongestSide", unwrap(size)))
            return imagecodecs.jpeg8_encode(np.full((unwrap(size), unwrap(size)), 128, np.uint8))

        prx.setPixelsId.side_effect = set_pixels_id
        prx.resetDefaults.side_effect = reset_defaults
        prx.getThumbnailByLongestSide.side_effect = by_longest_side
        prx.close.side_effect = lambda _ctx=None: self.log.append(("thumbs.close",))
        return prx

    def raw_file_store(self, user_of) -> RawFileStorePrx:
        """A RawFileStore of the session whose live user `user_of()` answers."""
        prx = strict(RawFileStorePrx)
        state = {"row": None, "modified": False}

        def set_file_id(fileId, _ctx=None):
            user = user_of()
            row = self.store.rows.get(fileId)
            if row is None or row.kind != "file" or row.group not in self.store.groups_in_scope(user, _ctx):
                raise omero.SecurityViolation(None, None, f"No OriginalFile {fileId} in this context")
            if row.owner != user.id and self.store.groups[row.group].perms[2] != "r":
                raise omero.SecurityViolation(None, None, f"Cannot read another user's file {fileId}")
            state["row"] = row
            self.log.append(("rfs.setFileId", fileId))

        def opened() -> Row:
            user_of()
            assert state["row"] is not None, "setFileId first"
            return state["row"]

        def write(buf, position, length, _ctx=None):
            row = opened()
            assert isinstance(buf, bytes) and len(buf) == length
            assert position == row.fields["written"], "blocks must be written in order"
            if self.full:
                raise omero.ResourceError(None, None, "No space left on device")
            block = bytes([buf[0] ^ 1]) + buf[1:] if self.corrupt_writes and buf else buf
            row.fields["digest"].update(block)
            row.fields["written"] += len(block)
            if self.keep_bytes:
                row.fields["data"] += block
            else:  # the mock itself remembers each call's arguments: forget the blocks too
                prx.reset_mock()
            state["modified"] = True
            self.log.append(("rfs.write", row.id, position, length))

        def save(_ctx=None):
            row = opened()
            self.log.append(("rfs.save", row.id))
            if not state["modified"]:  # RawFileBean.save: a store nothing was written to saves nothing, returns null
                return None
            # the server hashes the file it holds, with its hasher
            row.fields["size"] = row.fields["written"]
            row.fields["hash"] = row.fields["digest"].hexdigest()
            state["modified"] = False
            return self._original(row)

        def read(position, length, _ctx=None):
            return bytes(opened().fields["data"][position:position + length])

        def close(_ctx=None):
            if state["row"] is not None and state["modified"]:
                save()
            self.log.append(("rfs.close",))

        prx.setFileId.side_effect = set_file_id
        prx.write.side_effect = write
        prx.save.side_effect = save
        prx.read.side_effect = read
        prx.size.side_effect = lambda _ctx=None: len(opened().fields["data"])
        prx.close.side_effect = close
        return prx

    # -- queries (FakeQuery's projections) ------------------------------------------------------

    def projections(self, viewer: User) -> dict:
        def fileset_files(groups, iid):
            image = self.store.rows.get(iid)
            if image is None or image.kind != "image" or image.group not in groups:
                return []
            entries = self.store.select("entry", fileset=image.fields["fileset"])
            return [self._file_columns(self.store.rows[e.fields["file"]]) for e in entries]

        def attached_files(groups, iid, ns):
            out = []
            for link in self.store.select("ialink", groups, parent=iid):
                ann = self.store.rows[link.fields["child"]]
                if ann.kind == "fileann" and ann.fields["ns"] in ns:
                    out.append(self._file_columns(self.store.rows[ann.fields["file"]])
                               + [rstring(ann.fields["ns"]), rstring(ann.fields["description"])])
            return sorted(out, key=lambda row: row[0].val)

        return {q.FILESET_FILES: fileset_files, q.ATTACHED_FILES: attached_files}

    @staticmethod
    def _file_columns(row: Row) -> list:
        f = row.fields
        return [rlong(row.id), rstring(f["name"]), rlong(f["size"]), rstring(f["hash"]) if f["hash"] else None,
                rstring(f["hasher"]) if f["hasher"] else None]
