"""A strict fake of the omero-py services the adapter uses.

Every proxy is `create_autospec(<real omero-py class>, instance=True, spec_set=True)`: a method the
real API does not have (omero.client has no close(), for one), or a call with the wrong arguments,
fails here as it would against OMERO. Behind the proxies sits the in-memory model of
fake_omero_model, so queries, saves and imports answer consistently. `server.log` records the calls
that matter, in order.
"""
from __future__ import annotations

import hashlib
from unittest import mock

import Glacier2
import Ice
import omero
import omero.callbacks
import omero.clients
from omero.api import IAdminPrx, IQueryPrx, ISessionPrx, IUpdatePrx, RawFileStorePrx, ServiceFactoryPrx
from omero.cmd import ERR, HandlePrx
from omero.grid import ImportProcessPrx, ImportResponse, ImportSettings, ManagedRepositoryPrx
from omero.model import (
    DatasetI, ExperimenterGroupI, ExperimenterI, FilesetI, ImageI, OriginalFileI, PixelsI, ProjectDatasetLinkI,
    ProjectI, SessionI, TagAnnotationI, UploadJobI,
)
from omero.rtypes import rstring, unwrap
from omero.sys import EventContext, Roles

from .fake_omero_files import FakeFiles
from .fake_omero_model import BUILTIN_GROUPS, Row, SessionRow, Store, User
from .fake_omero_queries import FakeQuery, rid

SHA1_HASHER_ID = 7  # the ChecksumAlgorithm row for "SHA1-160"


def strict(cls):
    return mock.create_autospec(cls, instance=True, spec_set=True)


class FakeOmero:
    """One fake OMERO server; `client_factory` stands in for omero.client."""

    def __init__(self, commit_jitter: float = 0.0):
        self.store = Store(commit_jitter=commit_jitter)
        self.log: list[tuple] = []
        self.clients: list = []  # every client made, to check how each was closed
        self.session_services: list = []  # every ISession proxy handed out
        self.import_error: ERR | None = None  # the next import answers with this
        self.images_per_import = 1
        self.corrupt_uploads = False  # flip a byte of every block, as a broken network would
        self.import_hangs = False  # the server never finishes the import
        self.last_import: tuple | None = None  # (fileset, settings, ctx) of the last importFileset
        self.files = FakeFiles(self.store, self.log)  # files beside images: RawFileStore, FileAnnotations

    # -- the client -----------------------------------------------------------------------------

    def client_factory(self, host=None, port=None):
        client = strict(omero.clients.BaseClient)
        state = {"sf": None, "session": None, "detached": False}

        def attach(session: SessionRow) -> mock.NonCallableMagicMock:
            session.refcount += 1
            state["session"], state["sf"] = session, self._service_factory(session, state)
            return state["sf"]

        def join(key):
            self.log.append(("client.joinSession",))
            self._check_reachable()
            session = self.store.live_session(key)
            if session is None:
                raise Glacier2.PermissionDeniedException(f"Password check failed for '{key}'")
            return attach(session)

        def create(username=None, password=None):
            self._check_reachable()
            user = self.store.users.get(username)
            if user is None or user.password != password:
                raise Glacier2.PermissionDeniedException("Password check failed")
            return attach(self.store.new_session(user, refcount=0))

        def get_session(blocking=True):
            if state["sf"] is None:
                raise omero.ClientError("No session available")
            return state["sf"]

        def close_session():
            self.log.append(("client.closeSession", state["detached"]))
            session, state["sf"] = state["session"], None
            if session is not None:
                session.refcount -= 1
                # A detached session outlives its connections; otherwise the last one closes it.
                if not state["detached"] and session.refcount <= 0:
                    session.alive = False
                state["session"] = None

        def kill_session():
            self.log.append(("client.killSession",))
            if state["session"] is not None:
                state["session"].alive = False
            close_session()
            return 1

        client.joinSession.side_effect = join
        client.createSession.side_effect = create
        client.getSession.side_effect = get_session
        client.getSessionId.side_effect = lambda: get_session().ice_getIdentity().name
        client.closeSession.side_effect = close_session
        client.killSession.side_effect = kill_session
        client.getManagedRepository.side_effect = lambda description=False: self._managed_repository(state)
        client.createClient.side_effect = lambda secure: self._plain_client(state)
        self.clients.append(client)
        return client

    def _plain_client(self, state):
        other = self.client_factory()
        other.joinSession(state["session"].uuid)
        return other

    def _check_reachable(self):
        if not self.store.reachable:
            raise Ice.ConnectionRefusedException()

    def _live(self, session: SessionRow):
        self._check_reachable()
        if not session.alive:
            raise omero.RemovedSessionException(None, None, f"Session {session.uuid} was removed")
        return self.store.user_by_id(session.user)

    # -- services -------------------------------------------------------------------------------

    def _service_factory(self, session: SessionRow, state: dict):
        sf = strict(ServiceFactoryPrx)
        sf.ice_getIdentity.side_effect = lambda: Ice.Identity(session.uuid, "")

        def detach():
            self._live(session)
            state["detached"] = True
            self.log.append(("sf.detachOnDestroy",))

        def keep_alive(proxy):
            self._live(session)  # touches the session
            self.log.append(("sf.keepAlive",))
            # Like ServiceFactoryI.keepAlive: the answer is about the service proxy passed; none -> False.
            return proxy is not None

        sf.detachOnDestroy.side_effect = detach
        sf.keepAlive.side_effect = keep_alive
        sf.getQueryService.side_effect = lambda: self._query(session)
        sf.getUpdateService.side_effect = lambda: self._update(session)
        sf.getAdminService.side_effect = lambda: self._admin(session)
        sf.getSessionService.side_effect = lambda: self._session_service(session)
        sf.createRawFileStore.side_effect = lambda _ctx=None: self.files.raw_file_store(lambda: self._live(session))
        return sf

    def _query(self, session):
        user = self._live(session)
        fake = FakeQuery(self.store, user, self.log)
        fake.projections.update(self.files.projections(user))
        prx = strict(IQueryPrx)

        def find_all(query, params, _ctx=None):
            self._live(session)
            return fake.findAllByQuery(query, params, _ctx)

        def projection(query, params, _ctx=None):
            self._live(session)
            return fake.projection(query, params, _ctx)

        prx.findAllByQuery.side_effect = find_all
        prx.projection.side_effect = projection
        return prx

    def _admin(self, session):
        self._live(session)
        store = self.store
        prx = strict(IAdminPrx)

        def group(gid):
            if gid not in store.groups:  # as IAdmin.getGroup answers for an id that names no group
                raise omero.ApiUsageException(None, None, f"No group with id {gid}")
            g = ExperimenterGroupI(gid, True)
            g.setName(rstring(store.groups[gid].name))
            return g

        def event_context():
            user = self._live(session)
            return EventContext(
                sessionUuid=session.uuid, userId=user.id, userName=user.name, groupId=user.groups[0],
                groupName=store.groups[user.groups[0]].name, isAdmin=user.admin,
                memberOfGroups=list(user.groups), leaderOfGroups=[],
            )

        def experimenter(uid):
            self._live(session)
            user = store.user_by_id(uid)
            e = ExperimenterI(uid, True)
            e.setOmeName(rstring(user.name))
            e.setFirstName(rstring(user.first))
            e.setLastName(rstring(user.last))
            e.setEmail(rstring(user.email))
            return e

        prx.getEventContext.side_effect = event_context
        prx.getExperimenter.side_effect = experimenter
        prx.getDefaultGroup.side_effect = lambda uid: group(store.user_by_id(uid).groups[0])
        prx.containedGroups.side_effect = lambda uid: [group(g) for g in store.user_by_id(uid).groups]
        prx.getGroup.side_effect = group
        prx.getSecurityRoles.side_effect = lambda: Roles(
            rootId=0, rootName="root", systemGroupId=BUILTIN_GROUPS["system"], systemGroupName="system",
            userGroupId=BUILTIN_GROUPS["user"], userGroupName="user", guestGroupId=BUILTIN_GROUPS["guest"],
            guestGroupName="guest")
        return prx

    def _session_service(self, session):
        self._live(session)
        prx = strict(ISessionPrx)

        def create_with_timeout(principal, timeToLiveMilliseconds):
            caller = self._live(session)
            if not caller.admin:
                raise omero.SecurityViolation(None, None, "Sudo privilege required")
            user = self.store.users.get(principal.name)
            if user is None:
                raise omero.ApiUsageException(None, None, f"No such user: {principal.name}")
            self.log.append(("session.createSessionWithTimeout", principal.name, timeToLiveMilliseconds))
            s = SessionI()
            s.setUuid(rstring(self.store.new_session(user, refcount=0).uuid))
            return s

        prx.createSessionWithTimeout.side_effect = create_with_timeout
        self.session_services.append(prx)
        return prx

    def _update(self, session):
        self._live(session)
        prx = strict(IUpdatePrx)
        store = self.store

        def save_and_return(obj, _ctx=None):
            user = self._live(session)
            (gid,) = store.groups_in_scope(user, _ctx, writing=True)
            name = unwrap(obj.getName())
            self.log.append(("update.saveAndReturnObject", type(obj).__name__, name))
            if isinstance(obj, ProjectI) and rid(obj) is None:
                rows = [Row("project", store.allocate(), user.id, gid, {"name": name})]
            elif isinstance(obj, DatasetI) and rid(obj) is None:
                rows = [Row("dataset", store.allocate(), user.id, gid, {"name": name})]
                for link in obj.copyProjectLinks():
                    parent = store.rows.get(rid(link.getParent()))
                    if parent is None or parent.kind != "project" or parent.group != gid:
                        raise omero.ValidationException(None, None, "No such project in this group")
                    if parent.owner != user.id and store.groups[gid].perms[2:4] not in ("ra", "rw"):
                        raise omero.SecurityViolation(None, None, "Cannot link to another user's project")
                    rows.append(Row("pdlink", store.allocate(), user.id, gid,
                                    {"parent": parent.id, "child": rows[0].id}))
            elif isinstance(obj, OriginalFileI) and rid(obj) is None:
                return self.files.save_original(user, gid, obj)
            else:
                raise NotImplementedError(f"fake OMERO cannot save {obj!r}")
            store.commit(rows)
            saved = type(obj)(rows[0].id, True)
            saved.setName(rstring(name))
            return saved

        def delete(row, _ctx=None):
            user = self._live(session)
            target = store.rows.get(rid(row))
            kinds = {ProjectI: "project", DatasetI: "dataset", ProjectDatasetLinkI: "pdlink"}
            self.log.append(("update.deleteObject", type(row).__name__, rid(row)))
            if target is None or target.kind != kinds.get(type(row)):
                raise omero.ValidationException(None, None, f"No such object: {row!r}")
            if target.owner != user.id:
                raise omero.SecurityViolation(None, None, "Cannot delete another user's object")
            # No cascade: a row still referenced by a link cannot go (a foreign key in OMERO).
            referenced = [r for r in store.select("pdlink") + store.select("dilink")
                          if target.id in (r.fields["parent"], r.fields["child"])]
            if target.kind != "pdlink" and referenced:
                raise omero.ValidationException(None, None, f"{target.kind} {target.id} is still linked")
            store.delete(target.id)

        prx.saveAndReturnObject.side_effect = save_and_return
        prx.saveAndReturnArray.side_effect = lambda objs, _ctx=None: self.files.save_links(
            self._live(session), store.groups_in_scope(self._live(session), _ctx, writing=True)[0], objs)
        prx.deleteObject.side_effect = delete
        return prx

    # -- import ---------------------------------------------------------------------------------

    def _managed_repository(self, state):
        session = state["session"]
        self._live(session)
        prx = strict(ManagedRepositoryPrx)
        prx.importFileset.side_effect = lambda fs, settings, _ctx=None: self._import_process(
            session, fs, settings, _ctx)
        return prx

    def _import_process(self, session, fs, settings, ctx):
        user = self._live(session)
        self.log.append(("mrepo.importFileset", dict(ctx or {})))
        self.last_import = (fs, settings, ctx)
        assert isinstance(fs, FilesetI) and isinstance(settings, ImportSettings)
        (gid,) = self.store.groups_in_scope(user, ctx, writing=True)
        paths = [unwrap(e.getClientPath()) for e in fs.copyUsedFiles()]
        assert paths and all(paths), "every fileset entry needs a clientPath"
        jobs = [link.getChild() for link in fs.copyJobLinks()]
        assert len(jobs) == 1 and isinstance(jobs[0], UploadJobI), "an import needs one UploadJob"
        if unwrap(settings.checksumAlgorithm.getValue()) != "SHA1-160":
            raise omero.ApiUsageException(None, None, "unsupported checksum algorithm")
        target = self.store.rows.get(rid(settings.userSpecifiedTarget))
        if target is None or target.kind != "dataset" or target.group != gid:
            raise omero.SecurityViolation(None, None, "The target dataset is not in this group")
        buffers = [bytearray() for _ in paths]
        proc = strict(ImportProcessPrx)

        def uploader(i):
            self.log.append(("proc.getUploader", i))
            rfs = strict(RawFileStorePrx)

            def write(buf, position, length):
                assert isinstance(buf, bytes) and len(buf) == length
                assert position == len(buffers[i]), "blocks must be written in order"
                buffers[i].extend(bytes([buf[0] ^ 1]) + buf[1:] if self.corrupt_uploads and buf else buf)
                self.log.append(("uploader.write", i, position, length))

            rfs.write.side_effect = write
            rfs.close.side_effect = lambda: self.log.append(("uploader.close", i))
            return rfs

        def verify(hash):
            self.log.append(("proc.verifyUpload", list(hash)))
            actual = [hashlib.sha1(bytes(b)).hexdigest() for b in buffers]
            if list(hash) != actual:
                raise omero.ChecksumValidationException(None, None, "checksum mismatch")
            return self._handle(self._finish_import(user, gid, target, paths, buffers, actual, settings))

        proc.getUploader.side_effect = uploader
        proc.verifyUpload.side_effect = verify
        proc.close.side_effect = lambda: self.log.append(("proc.close",))
        return proc

    def _finish_import(self, user: User, gid: int, target: Row, paths, buffers, hashes, settings):
        """What the server does after verifyUpload: fileset, images, annotations, links."""
        if self.import_error is not None:
            error, self.import_error = self.import_error, None
            return error
        store = self.store
        fs = Row("fileset", store.allocate(), user.id, gid)
        rows = [fs]
        for path, buf, sha1 in zip(paths, buffers, hashes):
            f = Row("file", store.allocate(), user.id, gid, {"name": path.rsplit("/", 1)[-1], "hash": sha1,
                                                             "hasher": "SHA1-160", "hasher_id": SHA1_HASHER_ID,
                                                             "size": len(buf), "data": bytes(buf)})
            rows += [f, Row("entry", store.allocate(), user.id, gid,
                            {"fileset": fs.id, "file": f.id, "client_path": path})]
        annotations = [self._annotation_row(user, gid, a, rows) for a in settings.userSpecifiedAnnotationList or []]
        response = ImportResponse(pixels=[])
        name = unwrap(settings.userSpecifiedName)
        for series in range(self.images_per_import):
            img = Row("image", store.allocate(), user.id, gid, {
                "name": name if self.images_per_import == 1 else f"{name} [{series}]",
                "description": unwrap(settings.userSpecifiedDescription), "fileset": fs.id})
            rows += [img, Row("dilink", store.allocate(), user.id, gid, {"parent": target.id, "child": img.id})]
            rows += [Row("ialink", store.allocate(), user.id, gid, {"parent": img.id, "child": a})
                     for a in annotations]
            pixels = PixelsI(store.allocate(), True)
            pixels.setImage(ImageI(img.id, False))
            response.pixels.append(pixels)
        store.commit(rows)
        return response

    def _annotation_row(self, user, gid, ann, rows) -> int:
        if ann.isLoaded() is False and rid(ann) is not None:  # an existing annotation, to link
            existing = self.store.rows.get(rid(ann))
            if existing is None or existing.group != gid:
                raise omero.SecurityViolation(None, None, f"annotation {rid(ann)} is not in this group")
            if existing.owner != user.id and self.store.groups[gid].perms[2:4] not in ("ra", "rw"):
                raise omero.SecurityViolation(None, None, "cannot link to another user's annotation")
            return existing.id
        assert rid(ann) is None, "new annotations come without an id"
        ns = unwrap(ann.getNs())
        if isinstance(ann, TagAnnotationI):
            row = Row("tag", self.store.allocate(), user.id, gid, {"text": unwrap(ann.getTextValue()), "ns": ns})
        else:
            pairs = [(nv.name, nv.value) for nv in ann.getMapValue()]
            row = Row("map", self.store.allocate(), user.id, gid, {"pairs": pairs, "ns": ns})
        rows.append(row)
        return row.id

    def _handle(self, response):
        handle = strict(HandlePrx)
        handle.getResponse.side_effect = lambda: response
        handle.close.side_effect = lambda: self.log.append(("handle.close",))
        return handle

    def callback_class(self):
        """Stands in for omero.callbacks.CmdCallbackI (which needs a live Ice object adapter)."""
        real = omero.callbacks.CmdCallbackI  # before the test patches it
        cls = mock.create_autospec(real, spec_set=True)

        def make(adapter_or_client, handle, category=None, foreground_poll=True):
            assert adapter_or_client in self.clients
            self.log.append(("CmdCallbackI",))
            cb = strict(real)
            def loop(loops, ms):
                self.log.append(("callback.loop",))
                if self.import_hangs:  # what CmdCallbackI.loop raises when time runs out
                    raise omero.LockTimeout(None, None, "Command unfinished", 5000, loops * ms // 1000)
                return handle.getResponse()

            cb.loop.side_effect = loop
            cb.getResponse.side_effect = handle.getResponse

            def close(closeHandle):
                self.log.append(("callback.close", closeHandle))
                if closeHandle:
                    handle.close()

            cb.close.side_effect = close
            return cb

        cls.side_effect = make
        return cls

    # -- helpers for tests ----------------------------------------------------------------------

    def calls(self, *names: str) -> list[tuple]:
        """The logged calls with these names, in order (all when no names are given)."""
        return [c for c in self.log if not names or c[0] in names]

    def rows(self, kind: str, **where) -> list[Row]:
        return self.store.select(kind, **where)
