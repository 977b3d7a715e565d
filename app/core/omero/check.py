"""The OMERO self-check: prove a deployment works against its own server, one check at a time.

A facility runs it when it deploys or after an OMERO upgrade (`upload-portal check-omero`, or the
button on the staff page). It goes through the Gateway/Session boundary only, so the same code
checks the embedded store, the tests' fake and a live OMERO, and it does what an import does:
connect, open a user's session as the admin (import-as, ADFS sign-in), create a scratch
Project/Dataset, import a tiny generated OME-TIFF with key-values, a tag and provenance, mark it
complete, find it by SHA-1 as the duplicate check does, import a multi-series OME-TIFF (one fileset,
one image per series, deleted whole), then delete everything it made.
"""
from __future__ import annotations

import hashlib
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import numpy as np
import tifffile

from app.core.omero.base import (
    ORIGINAL, ORIGINAL_NAMESPACE, Annotations, FileToAttach, Gateway, ImageRef, OmeroError, PartOfFileset, Placement,
)

KEY = "upload-portal-check"  # the key-value the check attaches and reads back
SESSION_SECONDS = 600
SERIES = ("first", "second", "third")  # the series of the multi-series check's file

REMEDIES = {
    "connect": "check PORTAL_OMERO_HOST/PORT, that the server answers on that port, and the admin account "
               "(PORTAL_OMERO_ADMIN_USER/PASSWORD) or the key given with --key",
    "admin rights": "give the portal's OMERO account the Sudo privilege (a full admin, or a light admin with Sudo)",
    "groups": "add the account to at least one OMERO group, or name one it is in with --group",
    "scratch container": "the account must be able to create Projects and Datasets in the group",
    "import": "check the managed repository (disk space, permissions) and the server's import log",
    "key-values": "the server did not keep the import's annotations: check its version and the import log",
    "tag": "the server did not link the tag: check the group's permissions and the import log",
    "original file": "check the repository's disk (ManagedRepository) and that the user may annotate in the group",
    "find by SHA-1": "the server must record SHA1-160 checksums (omero.checksum.supported)",
    "download": "check the repository's disk: OMERO could not give back the bytes it stored",
    "duplicate lookup": "the server must be able to query map annotations (OMERO 5.6 or later)",
    "multi-series": "the server must make one image per series of a file, in one fileset (Bio-Formats, "
                    "PixelsProcessor), and refuse to delete part of one: check its version and the import log",
    "clean up": "remove the Project named in the detail by hand in OMERO.web",
}


@dataclass
class Result:
    check: str
    ok: bool
    detail: str

    def remedy(self) -> str:
        return REMEDIES[self.check]

    def line(self) -> str:
        remedy = "" if self.ok else f" -- to fix: {self.remedy()}"
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.check:<17} {self.detail}{remedy}"

    def json(self) -> dict:
        return asdict(self)


class Skipped(Exception):
    """A check that cannot run because an earlier one failed."""


def tiny_ome_tiff(folder: Path, run: str, series: tuple[str, ...] = ()) -> tuple[Path, str]:
    """A 32x32 OME-TIFF with pixels unique to this run (one image, or one per named series);
    returns it with its SHA-1."""
    path = folder / f"{KEY}-{run}{'-series' if series else ''}.ome.tif"
    rng = np.random.default_rng(int(run, 16) + len(series))
    with tifffile.TiffWriter(path, ome=True) as tif:
        for name in series or (f"{KEY} {run}",):
            tif.write(rng.integers(0, 255, (32, 32), dtype=np.uint8), metadata={"axes": "YX", "Name": name})
    return path, hashlib.sha1(path.read_bytes()).hexdigest()


class SelfCheck:
    """One run of the checks; `results()` yields each as it ends."""

    def __init__(self, gateway: Gateway, *, key: str | None, admin_user: str, group: str | None = None):
        self.gateway, self.key, self.admin_user, self.group = gateway, key, admin_user, group
        self.run = uuid.uuid4().hex[:8]
        self.made_key: str | None = None  # a session this check opened, closed at the end
        self.session = None
        self.group_id: int | None = None
        self.placement: Placement | None = None
        self.image: ImageRef | None = None
        self.series: list[ImageRef] = []  # the multi-series import's images, removed at the end
        self.path: Path | None = None
        self.file_sha1 = ""
        self.original = None  # the attached original file, as stored_files describes it
        self.original_sha1 = ""
        self.content_sha1 = hashlib.sha1(f"{KEY} {self.run}".encode()).hexdigest()  # as a converted file's

    def results(self) -> Iterator[Result]:
        with tempfile.TemporaryDirectory(prefix=f"{KEY}-") as tmp:
            try:
                key = self.key or self._admin_key()
                with self.gateway.session(key) as self.session:
                    yield from self._checks(Path(tmp))
            except OmeroError as e:  # no session at all: the first check says why
                yield Result("connect", False, str(e))
            finally:
                if self.made_key:
                    self.gateway.close_session(self.made_key)

    def _admin_key(self) -> str:
        if not self.gateway.can_create_sessions:
            raise OmeroError("No OMERO admin account is configured and no key was given (--key)")
        self.made_key = self.gateway.create_session(self.admin_user, SESSION_SECONDS)
        return self.made_key

    def _checks(self, tmp: Path) -> Iterator[Result]:
        steps: list[tuple[str, Callable[[], str]]] = [
            ("connect", self._connect),
            ("admin rights", self._admin_rights),
            ("groups", self._groups),
            ("scratch container", self._container),
            ("import", lambda: self._import(tmp)),
            ("key-values", self._key_values),
            ("tag", self._tag),
            ("original file", self._original_file),
            ("find by SHA-1", self._find_by_sha1),
            ("download", self._download),
            ("duplicate lookup", self._duplicate),
            ("multi-series", lambda: self._multi_series(tmp)),
        ]
        try:
            for name, step in steps:
                yield self._one(name, step)
        finally:
            yield self._one("clean up", self._clean_up)

    @staticmethod
    def _one(name: str, step: Callable[[], str]) -> Result:
        try:
            return Result(name, True, step())
        except Skipped as e:
            return Result(name, False, f"not run: {e}")
        except (OmeroError, AssertionError) as e:
            return Result(name, False, str(e))

    def _connect(self) -> str:
        me = self.session.whoami()
        return f"{self.session.server_version()}; signed in as {me.username}"

    def _admin_rights(self) -> str:
        if not self.gateway.can_create_sessions:
            return "no admin account configured: import-as and ADFS sign-in without a pasted key are off"
        if self.made_key:
            return f"{self.admin_user} opened a session as a user (Sudo works: import-as and ADFS sign-in can)"
        me = self.session.whoami()
        self.gateway.close_session(self.gateway.create_session(me.username, 60))
        return f"the admin account opened a session for {me.username} (Sudo works)"

    def _groups(self) -> str:
        me = self.session.whoami()
        chosen = [g for g in me.groups if g.name == self.group] if self.group else \
            [g for g in me.groups if g.id == me.default_group_id]
        if not chosen:
            raise AssertionError(f"{me.username} is in no group named {self.group!r}" if self.group
                                 else f"{me.username} is in no group")
        self.group_id = chosen[0].id
        return f"{len(me.groups)} group(s); checking in '{chosen[0].name}' (id {chosen[0].id})"

    def _container(self) -> str:
        self._needs(self.group_id, "groups")
        self.placement = self.session.get_or_create_dataset(self.group_id, f"{KEY} {self.run}", date.today().isoformat())
        return f"Project {self.placement.project_id} / Dataset {self.placement.dataset_id}"

    def _import(self, tmp: Path) -> str:
        self._needs(self.placement, "scratch container")
        path, self.file_sha1 = tiny_ome_tiff(tmp, self.run)
        self.path = path
        annotations = Annotations(key_values=[(KEY, self.run)], tags=[f"{KEY}-{self.run}"],
                                  provenance={"content_sha1": self.content_sha1, "job_uid": f"check-{self.run}"})
        images = self.session.import_image(self.group_id, self.placement.dataset_id, [path], name=path.name,
                                           description="made and removed by upload-portal check-omero",
                                           annotations=annotations, progress=lambda sent, total: None)
        self.image = images[0]
        if len(images) != 1:
            raise AssertionError(f"one single-image file made {len(images)} images: {[i.id for i in images]}")
        if self.image.sha1 != self.file_sha1:
            raise AssertionError(f"image {self.image.id}: OMERO holds SHA-1 {self.image.sha1 or 'none'}, "
                                 f"the file sent has {self.file_sha1}")
        self._mark(images)
        return f"image {self.image.id}; SHA-1 matches; marked complete"

    def _mark(self, images: list[ImageRef]) -> None:
        """Mark an import complete, and see that only the mark makes it so."""
        ids = [i.id for i in images]
        if [i.id for i in self.session.find_images(self.group_id, images[0].sha1) if i.complete]:
            raise AssertionError(f"images {ids} count as complete before the portal marked them")
        self.session.mark_complete(self.group_id, ids)
        marked = [i.id for i in self.session.find_images(self.group_id, images[0].sha1) if i.complete]
        if marked != ids:
            raise AssertionError(f"after marking images {ids} complete, the complete ones are {marked}")

    def _key_values(self) -> str:
        self._needs(self.image, "import")
        values = self.session.key_values(self.group_id, KEY)
        if self.run not in values:
            raise AssertionError(f"the key-value {KEY}={self.run} was not found after the import")
        return f"{KEY}={self.run} read back"

    def _tag(self) -> str:
        self._needs(self.image, "import")
        tags = self.session.image_tags(self.group_id, self.image.id)
        if tags != [f"{KEY}-{self.run}"]:
            raise AssertionError(f"image {self.image.id} carries the tags {tags}, not '{KEY}-{self.run}'")
        return f"'{KEY}-{self.run}' read back from image {self.image.id}"

    def _original_file(self) -> str:
        self._needs(self.image, "import")
        # a file of its own (not the imported one), so that only the attachment can match its SHA-1
        original = self.path.with_name(f"{KEY}-original.txt")
        original.write_bytes(f"{KEY} {self.run}: an original file kept beside its image\n".encode() * 4096)
        self.original_sha1 = hashlib.sha1(original.read_bytes()).hexdigest()
        self.session.attach_files(self.group_id, [self.image.id], [FileToAttach(original, original.name, ORIGINAL)],
                                  ORIGINAL_NAMESPACE, lambda sent, total: None)
        listed = self.session.stored_files(self.group_id, self.image.id)
        self.original = next((f for f in listed if f.kind == ORIGINAL and f.sha1 == self.original_sha1), None)
        if self.original is None:
            raise AssertionError(f"image {self.image.id} lists no attached file with SHA-1 {self.original_sha1}")
        return f"attached as original file {self.original.id}; OMERO holds its SHA-1"

    def _download(self) -> str:
        self._needs(self.original, "original file")
        digest, size = hashlib.sha1(), 0
        for block in self.session.read_file(self.group_id, self.original.id):
            digest.update(block)
            size += len(block)
        if digest.hexdigest() != self.original_sha1:
            raise AssertionError(f"the {size} bytes read back have SHA-1 {digest.hexdigest()}, not {self.original_sha1}")
        return f"{size} bytes read back, identical"

    def _find_by_sha1(self) -> str:
        self._needs(self.image, "import")
        found = self.session.find_images(self.group_id, self.file_sha1)
        if [(r.id, r.job_uid) for r in found] != [(self.image.id, f"check-{self.run}")]:
            raise AssertionError(f"looking up SHA-1 {self.file_sha1} found {[r.id for r in found]}, "
                                 f"not image {self.image.id}")
        return f"SHA-1 {self.file_sha1} -> image {self.image.id}"

    def _duplicate(self) -> str:
        self._needs(self.image, "import")
        found = self.session.find_images(None, self.content_sha1)
        if [r.id for r in found] != [self.image.id]:
            raise AssertionError(f"the duplicate lookup by source SHA-1 found {[r.id for r in found]}, "
                                 f"not image {self.image.id}")
        return f"a second upload of the same source would be reported as image {self.image.id}"

    def _multi_series(self, tmp: Path) -> str:
        self._needs(self.placement, "scratch container")
        path, sha1 = tiny_ome_tiff(tmp, self.run, SERIES)
        self.series = self.session.import_image(
            self.group_id, self.placement.dataset_id, [path], name=path.name,
            description="made and removed by upload-portal check-omero", progress=lambda sent, total: None,
            annotations=Annotations(provenance={"content_sha1": sha1, "job_uid": f"check-series-{self.run}"}))
        names = [i.name for i in self.series]
        if names != [f"{path.name} [{name}]" for name in SERIES]:
            raise AssertionError(f"a file of {len(SERIES)} series made the images {names}")
        if len({i.fileset_id for i in self.series}) != 1 or {i.sha1 for i in self.series} != {sha1}:
            raise AssertionError(f"images {[i.id for i in self.series]} are not one fileset of the file sent")
        try:
            self.session.delete_images(self.group_id, [self.series[0].id])
            raise AssertionError(f"image {self.series[0].id} was deleted without the rest of its fileset")
        except PartOfFileset:
            pass  # refused, as it must be
        self._mark(self.series)
        ids = [i.id for i in self.series]
        self.session.delete_images(self.group_id, ids)
        self.series = []
        if self.session.find_images(self.group_id, sha1):
            raise AssertionError(f"images of {ids} are still there after the fileset's removal")
        return f"{len(ids)} images in one fileset ({', '.join(names)}); part of it refused, all of it deleted"

    def _clean_up(self) -> str:
        removed = []
        if self.series:
            self.session.delete_images(self.group_id, [i.id for i in self.series])
            removed.append(f"images {', '.join(str(i.id) for i in self.series)}")
        if self.image is not None:
            self.session.delete_images(self.group_id, [self.image.id])
            if self.session.find_images(self.group_id, self.file_sha1):
                raise AssertionError(f"image {self.image.id} is still there after its removal")
            removed.append(f"image {self.image.id}")
        if self.placement is not None:
            self.session.remove_placement(self.group_id, self.placement)
            removed.append(f"Project '{self.placement.project}' with its Dataset")
        return "removed " + (", ".join(removed) or "nothing (nothing was made)")

    @staticmethod
    def _needs(value, check: str) -> None:
        if value is None:
            raise Skipped(f"the {check} check failed")
