"""The fake server's commands: managed-repository imports and Delete2, run as a real server runs them.

Each rule cites the omero-blitz / omero-server source it models (paths in github.com/ome/omero-blitz
and github.com/ome/omero-server):

- importFileset saves the fileset with its original files before any byte arrives
  (omero-blitz ome/services/blitz/repo/ManagedRepositoryI.importFileset -> RepositoryDaoImpl.saveFileset).
- A file's hash is computed and stored when its uploader (a RawFileStore) is closed
  (omero-server ome/services/RawFileBean.save, called from close). verifyUpload compares the client's
  hashes with the stored ones and raises ChecksumValidationException for any mismatch or missing
  hash, i.e. for an uploader left open (omero-blitz ManagedImportProcessI.verifyUpload).
- A write the repository's disk cannot take raises ResourceError (RawFileBean.write).
- verifyUpload returns a handle at once; the import then runs in the background in steps
  (omero-blitz ManagedImportRequestI.step, helper.setSteps(5)): step 0 importMetadata saves one
  image per series of the file (Bio-Formats; named "<name> [<series>]" when there are several, by
  ome/formats/model/PixelsProcessor; app.core.omero.series reads the series as Bio-Formats does),
  each with its pixels row, whose sha1 is the placeholder "Pending..."
  (ome/formats/OMEROMetadataStoreClient.getPixels), the dataset link and the ImportSettings
  annotations, linked to every image; step 1 pixelData replaces the placeholder with the planes' SHA-1
  only when it computes statistics (not when the file carries its min/max, `min_max_in_file`);
  step 2 thumbnails; step 3 processing; step 4 builds the ImportResponse. A step that fails ends the
  command with the ERR ManagedImportRequestI.step names (`step_error`: "import-file-exception" for an
  IOException or FormatException, "import-unknown-format", "import-missing-library",
  "import-request-failure" for anything else), its category the request's type
  ("::omero::grid::ImportRequest", omero/cmd/Helper.fail), and what earlier steps saved stays.
- Closing a handle before the end cancels the command: ERR "cancel-called" (HandleI.close ->
  cancel), after the step in progress. So does the end of the client's connection (closeSession,
  or a connection that dropped): Glacier2 destroys its ServiceFactory, whose CloseableServants,
  the command handles among them, are closed (omero-blitz omero/cmd/SessionI.cleanServants), even
  for a session kept alive by detachOnDestroy.
- The server tells a command's callbacks when it ends (HandleI.notifyCallbacks -> CmdCallback.finished);
  that call can be lost or late (`FakeOmero.callbacks`), and only polling getResponse then sees the end.
- Delete2 on images follows blitz-delete-rules.xml (omero-blitz src/main/resources/ome/services/
  graph-rules): the images' links and pixels go; map annotations left unlinked go; tags and file
  annotations go only when the image's owner owns them and nothing else links them; a fileset goes
  with its images, and its original files with it; some of a fileset's images while others remain
  is refused, nothing deleted: ERR "graph-fail", "within Fileset:F may not delete Image:I1 while
  Image:I2 remains" (Delete2I, category "::omero::cmd::Delete2").
"""
from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from pathlib import Path

import omero
from omero.api import RawFileStorePrx
from omero.cmd import ERR, Delete2Response, HandlePrx, State, Status
from omero.grid import ImportProcessPrx, ImportResponse, ImportSettings, ManagedRepositoryPrx
from omero.model import FilesetI, ImageI, PixelsI, TagAnnotationI, UploadJobI
from omero.rtypes import unwrap

from app.core.omero.series import image_names

from .fake_omero_model import Row, SessionRow, Store, User
from .fake_omero_queries import rid, strict

SHA1_HASHER_ID = 7  # the ChecksumAlgorithm row for "SHA1-160"
IMPORT_REQUEST = "::omero::grid::ImportRequest"  # ERR.category of an import (the request's ice_id)
DELETE_REQUEST = "::omero::cmd::Delete2"
PENDING = "Pending..."  # Pixels.sha1 as OMEROMetadataStoreClient saves it


class StepFailed(Exception):
    """A server-side step fails; the command answers ERR `name` with this message."""

    def __init__(self, message: str, name: str = "import-request-failure"):
        super().__init__(message)
        self.name = name


class Command:
    """omero.cmd.HandleI: a command running in steps on its own thread, its handle and callbacks."""

    def __init__(self, server, steps, response, category: str, connection: list):
        self.server, self.steps, self.build_response, self.category = server, steps, response, category
        connection.append(self)  # the client connection whose end closes this handle
        self.response = None
        self.flags: list = []  # Status.flags: CANCELLED or FAILURE once ended so
        self.callbacks: list = []  # servants registered through addCallback
        self.cancel_requested = threading.Event()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True, name="fake-omero-command")
        self.thread.start()

    def _run(self) -> None:
        response = None
        for number, step in enumerate(self.steps):
            gate = self.server.step_gates.get(number)
            while gate is not None and not gate.wait(0.01):  # a test holds the command before this step
                if self.cancel_requested.is_set():
                    break
            if self.cancel_requested.is_set():
                response = ERR(category=self.category, name="cancel-called", parameters={})
                break
            try:
                step()
            except StepFailed as e:
                response = ERR(category=self.category, name=e.name, parameters={"message": str(e)})
                break
            time.sleep(self.server.step_seconds)
        else:
            response = self.build_response()
        self._end(response)

    def _end(self, response) -> None:
        with self.lock:
            self.response = response
            if isinstance(response, ERR):
                self.flags = [State.CANCELLED if response.name == "cancel-called" else State.FAILURE]
            callbacks = list(self.callbacks)
        self.done.set()
        self.server.log.append(("command.end", type(response).__name__))
        mode = self.server.callbacks
        if mode == "lost":
            return
        delay = self.server.late_seconds if mode == "late" else 0
        timer = threading.Timer(delay, lambda: [cb.finished(response, self.status(), None) for cb in callbacks])
        timer.daemon = True
        timer.start()

    def close(self) -> None:
        """HandleI.close: closing before the end cancels, after the step in progress."""
        if self.response is None:
            self.cancel_requested.set()
            self.done.wait(timeout=10)

    def status(self) -> Status:
        return Status(flags=list(self.flags), steps=len(self.steps))

    def handle(self, session: SessionRow):
        server = self.server
        prx = strict(HandlePrx)

        def get_response():
            server.live(session)
            server.fault("handle.getResponse")
            return self.response

        def add_callback(cb):
            server.live(session)
            servant = server.servant(cb)
            with self.lock:
                ended = self.response is not None
                self.callbacks.append(servant)
            server.log.append(("handle.addCallback", ended))

        def close():
            server.fault("handle.close")
            server.log.append(("handle.close", self.response is None))
            self.close()

        prx.getResponse.side_effect = get_response
        prx.getStatus.side_effect = lambda: (server.live(session), self.status())[1]
        prx.addCallback.side_effect = add_callback
        prx.close.side_effect = close
        return prx


class Imports:
    """ManagedRepositoryPrx, ImportProcessPrx and RawFileStorePrx (uploaders) of one server."""

    def __init__(self, server):
        self.server = server
        self.store: Store = server.store

    def repository(self, session: SessionRow, connection: list):
        self.server.live(session)
        prx = strict(ManagedRepositoryPrx)
        prx.importFileset.side_effect = lambda fs, settings, _ctx=None: self._process(session, connection, fs,
                                                                                       settings, _ctx)
        return prx

    def _process(self, session, connection, fs, settings, ctx):
        server, store = self.server, self.store
        user = server.live(session)
        server.log.append(("mrepo.importFileset", dict(ctx or {})))
        server.last_import = (fs, settings, ctx)
        assert isinstance(fs, FilesetI) and isinstance(settings, ImportSettings)
        (gid,) = store.groups_in_scope(user, ctx, writing=True)
        paths = [unwrap(e.getClientPath()) for e in fs.copyUsedFiles()]
        assert paths and all(paths), "every fileset entry needs a clientPath"
        jobs = [link.getChild() for link in fs.copyJobLinks()]
        assert len(jobs) == 1 and isinstance(jobs[0], UploadJobI), "an import needs one UploadJob"
        if unwrap(settings.checksumAlgorithm.getValue()) != "SHA1-160":
            raise omero.ApiUsageException(None, None, "unsupported checksum algorithm")
        target = store.rows.get(rid(settings.userSpecifiedTarget))
        if target is None or target.kind != "dataset" or target.group != gid:
            raise omero.SecurityViolation(None, None, "The target dataset is not in this group")
        # The fileset and its (still empty, unhashed) files exist from here on.
        fileset = Row("fileset", store.allocate(), user.id, gid)
        files = [Row("file", store.allocate(), user.id, gid, {
            "name": path.rsplit("/", 1)[-1], "hash": None, "hasher": "SHA1-160", "hasher_id": SHA1_HASHER_ID,
            "size": 0}) for path in paths]
        entries = [Row("entry", store.allocate(), user.id, gid, {"fileset": fileset.id, "file": f.id, "client_path": p})
                   for f, p in zip(files, paths)]
        store.commit([fileset, *files, *entries])
        buffers = [bytearray() for _ in paths]
        proc = strict(ImportProcessPrx)
        proc.getUploader.side_effect = lambda i: self._uploader(session, files[i], buffers[i], i)
        proc.verifyUpload.side_effect = lambda hashes: self._verify(session, connection, user, gid, target, fileset,
                                                                    files, hashes, settings)
        proc.close.side_effect = lambda: server.log.append(("proc.close",))
        return proc

    def _uploader(self, session, file: Row, buffer: bytearray, i: int):
        server = self.server
        server.live(session)
        server.log.append(("proc.getUploader", i))
        rfs = strict(RawFileStorePrx)

        def write(buf, position, length):
            server.live(session)
            assert isinstance(buf, bytes) and len(buf) == length
            assert position == len(buffer), "blocks must be written in order"
            server.fault("uploader.write")
            if server.repository_free is not None:
                if length > server.repository_free:  # RawFileBean.write: IOException -> ResourceError
                    raise omero.ResourceError(None, None, "No space left on device")
                server.repository_free -= length
            buffer.extend(bytes([buf[0] ^ 1]) + buf[1:] if server.corrupt_uploads and buf else buf)
            server.log.append(("uploader.write", i, position, length))

        def close():
            # RawFileBean.save on close: the server hashes what it holds.
            file.fields.update(hash=hashlib.sha1(bytes(buffer)).hexdigest(), size=len(buffer), data=bytes(buffer))
            server.log.append(("uploader.close", i))

        rfs.write.side_effect = write
        rfs.close.side_effect = close
        return rfs

    def _verify(self, session, connection, user: User, gid: int, target: Row, fileset: Row, files: list[Row], hashes,
                settings):
        server = self.server
        server.live(session)
        server.log.append(("proc.verifyUpload", list(hashes)))
        if len(hashes) != len(files):
            raise omero.ApiUsageException(None, None, f"hashes size should be {len(files)} not {len(hashes)}")
        failing = {i: f.fields["hash"] or "" for i, (f, h) in enumerate(zip(files, hashes)) if f.fields["hash"] != h}
        if failing:
            raise omero.ChecksumValidationException(None, None, "A checksum mismatch has occurred.", failing)
        saved: dict[str, list] = {"images": [], "pixels": []}

        def metadata():  # step 0: an image per series, pixels rows, dataset links, annotations
            if server.fail_at_step == 0:
                raise StepFailed(server.step_failure, server.step_error)
            rows = []
            annotations = [self._annotation(user, gid, a, rows) for a in settings.userSpecifiedAnnotationList or []]
            for image_name in self._series(unwrap(settings.userSpecifiedName), files[0]):
                img = Row("image", self.store.allocate(), user.id, gid, {
                    "name": image_name, "description": unwrap(settings.userSpecifiedDescription), "fileset": fileset.id})
                pixels = Row("pixels", self.store.allocate(), user.id, gid, {"image": img.id, "sha1": PENDING})
                rows += [img, pixels, Row("dilink", self.store.allocate(), user.id, gid,
                                          {"parent": target.id, "child": img.id})]
                rows += [Row("ialink", self.store.allocate(), user.id, gid, {"parent": img.id, "child": a})
                         for a in annotations]
                saved["images"].append(img)
                saved["pixels"].append(pixels)
            self.store.commit(rows)

        def pixel_data():  # step 1: Pixels.sha1 from the planes read, when statistics are computed
            if server.fail_at_step == 1:
                raise StepFailed(server.step_failure, server.step_error)
            if not server.min_max_in_file:
                for pixels in saved["pixels"]:
                    pixels.fields["sha1"] = hashlib.sha1(f"planes of {pixels.id}".encode()).hexdigest()

        def later(number):
            def step():
                if server.fail_at_step == number:
                    raise StepFailed(server.step_failure, server.step_error)
            return step

        def response():
            rsp = ImportResponse(pixels=[], objects=[])
            for img, pixels in zip(saved["images"], saved["pixels"]):
                p = PixelsI(pixels.id, True)
                p.setImage(ImageI(img.id, False))
                rsp.pixels.append(p)
            return rsp

        command = Command(server, [metadata, pixel_data, later(2), later(3), later(4)], response, IMPORT_REQUEST,
                          connection)
        server.commands.append(command)
        return command.handle(session)

    @staticmethod
    def _series(name: str, primary: Row) -> list[str]:
        """The images' names: one per series of the uploaded primary file, as Bio-Formats reads it."""
        with tempfile.TemporaryDirectory(prefix="fake-omero-repo-") as repo:
            path = Path(repo) / primary.fields["name"]
            path.write_bytes(primary.fields.get("data", b""))
            return image_names(name, path)

    def _annotation(self, user, gid, ann, rows) -> int:
        store = self.store
        if ann.isLoaded() is False and rid(ann) is not None:  # an existing annotation, to link
            existing = store.rows.get(rid(ann))
            if existing is None or existing.group != gid:
                raise StepFailed(f"annotation {rid(ann)} is not in this group")
            if existing.owner != user.id and store.groups[gid].perms[2:4] not in ("ra", "rw"):
                raise StepFailed("cannot link to another user's annotation")
            return existing.id
        assert rid(ann) is None, "new annotations come without an id"
        ns = unwrap(ann.getNs())
        if isinstance(ann, TagAnnotationI):
            row = Row("tag", store.allocate(), user.id, gid, {"text": unwrap(ann.getTextValue()), "ns": ns})
        else:
            pairs = [(nv.name, nv.value) for nv in ann.getMapValue()]
            row = Row("map", store.allocate(), user.id, gid, {"pairs": pairs, "ns": ns})
        rows.append(row)
        return row.id


def delete_images(server, session: SessionRow, connection: list, request, ctx):
    """IServiceFactory.submit(Delete2 on images, or on filesets): a Command applying blitz-delete-rules.xml."""
    store: Store = server.store
    user = server.live(session)
    groups = store.groups_in_scope(user, ctx)
    (kind, ids), = request.targetObjects.items()
    assert kind in ("Image", "Fileset") and not request.childOptions and not request.dryRun
    server.log.append(("sf.submit", "Delete2", sorted(ids)) if kind == "Image" else ("sf.submit", "Delete2", kind, sorted(ids)))
    deleted = {"ome.model.core.Image": []}

    def delete_filesets():  # a fileset no image uses (an import that failed at step 0): it and its files
        filesets = [store.rows.get(i) for i in ids]
        if any(fs is None or fs.kind != "fileset" or fs.group not in groups or fs.owner != user.id for fs in filesets):
            raise StepFailed(f"no such filesets of yours: {sorted(ids)}", "graph-fail")
        if any(store.select("image", fileset=fs.id) for fs in filesets):
            raise StepFailed("a fileset with images is deleted through its images here", "graph-fail")
        with store.lock:
            for fs in filesets:
                _delete_fileset(store, fs.id)

    def delete():
        images = [store.rows.get(i) for i in ids]
        if any(img is None or img.kind != "image" or img.group not in groups for img in images):
            raise StepFailed(f"no such images: {sorted(ids)}", "graph-fail")
        if any(img.owner != user.id and not user.admin for img in images):
            raise StepFailed("cannot delete another user's image", "graph-fail")
        for img in images:
            remaining = [i for i in store.select("image", fileset=img.fields["fileset"]) if i.id not in ids]
            if remaining:
                raise StepFailed(f"within Fileset:{img.fields['fileset']} may not delete Image:{img.id} while "
                                 f"Image:{remaining[0].id} remains", "graph-fail")
        with store.lock:
            for img in images:
                for link in store.select("dilink", child=img.id) + store.select("pixels", image=img.id):
                    store.delete(link.id)
                for link in store.select("ialink", parent=img.id):
                    store.delete(link.id)
                    ann = store.rows[link.fields["child"]]
                    still_linked = store.select("ialink", child=ann.id)
                    if not still_linked and (ann.kind == "map" or ann.owner == img.owner):
                        store.delete(ann.id)
                        if ann.kind == "fileann":  # a FileAnnotation takes its OriginalFile with it
                            store.delete(ann.fields["file"])
                store.delete(img.id)
                deleted["ome.model.core.Image"].append(img.id)
                fs_id = img.fields["fileset"]
                if fs_id in store.rows and not store.select("image", fileset=fs_id):
                    _delete_fileset(store, fs_id)

    command = Command(server, [delete if kind == "Image" else delete_filesets],
                      lambda: Delete2Response(deletedObjects=deleted), DELETE_REQUEST, connection)
    server.commands.append(command)
    return command.handle(session)


def _delete_fileset(store: Store, fs_id: int) -> None:
    """A fileset goes with its entries and their original files."""
    for entry in store.select("entry", fileset=fs_id):
        store.delete(entry.id)
        store.delete(entry.fields["file"])
    store.delete(fs_id)
