"""A strict fake of the omero-py services the adapter uses, as strict as the server behind them.

Every proxy is `create_autospec(<real omero-py class>, instance=True, spec_set=True)`: a method the
real API does not have (omero.client has no close(), for one), or a call with the wrong arguments,
fails here as it would against OMERO. Behind the proxies sits the in-memory model of
fake_omero_model, so queries, saves and imports answer consistently. `server.log` records the calls
that matter, in order. omero-py's own CmdCallbackI runs unchanged against it: the fake client hands
out an object adapter whose servants the fake server calls back.

The server's rules modelled here (sources in github.com/ome/omero-blitz and omero-server; the
commands' rules are in fake_omero_import):
- Sessions: a call to a session past its time-to-idle fails with SessionTimeoutException and ends
  it (omero-server ome/services/sessions/state/SessionCache.getSessionContext); sessions from
  OMERO.web's token page idle out after 10 minutes (`web_session`); a connection that called
  enableKeepAlive keeps its session touched (omero-py omero/clients.py BaseClient.enableKeepAlive).
  Joining a gone session is refused by Glacier2 (PermissionDeniedException).
- createSessionWithTimeout for a name with no user: when no group is named, ApiUsageException
  "Can't find default group", which SessionBean.creationExceptionHandler turns into
  AuthenticationException "Error creating session."; RemovedSessionException "Cannot find a user"
  when one is. Only an admin with the Sudo privilege may open a session for anyone; any other
  caller, a group owner or a light admin without Sudo, only in a group it leads (the target's
  default group when none is named), else SecurityViolation "Group sudo is not permitted for group"
  (omero-server ome/services/sessions/SessionBean.createSessionWithTimeouts -> groupsLed,
  SessionManagerImpl validateSessionInputs / executeLookupUser).
- Creating or joining a session against a server still starting: omero-py's BaseClient.createSession
  retries, then raises omero.ClientError (omero-py omero/clients.py); a test queues that as a fault.
- IUpdate saves a loaded MapAnnotation's new pairs (its owner only), and deletes an OriginalFile
  that nothing links to.
- IUpdate.deleteObject does not cascade: an object something links to is refused with
  ValidationException (omero-server ome/logic/UpdateImpl.deleteObject; the database's foreign keys).
- Injected faults (`fail`) raise the server's or Ice's exception where the server would.
"""
from __future__ import annotations

import threading

import Glacier2
import Ice
import omero
import omero.clients
from omero.api import IAdminPrx, IConfigPrx, IQueryPrx, ISessionPrx, IUpdatePrx, ServiceFactoryPrx
from omero.cmd import Delete2
from omero.model import (
    DatasetI, ExperimenterGroupI, ExperimenterI, ImageI, MapAnnotationI, OriginalFileI, ProjectDatasetLinkI, ProjectI,
    SessionI, TagAnnotationI,
)
from omero.rtypes import rstring, unwrap
from omero.sys import EventContext, Roles

from .fake_omero_files import FakeFiles
from .fake_omero_import import Imports, delete_images
from .fake_omero_model import BUILTIN_GROUPS, Row, SessionRow, Store
from .fake_omero_queries import FakeQuery, rid, strict

WEB_SESSION_IDLE_SECONDS = 600  # OMERO.web's sessions (omero.sessions.timeout default)


class FakeOmero:
    """One fake OMERO server; `client_factory` stands in for omero.client."""

    def __init__(self, commit_jitter: float = 0.0):
        self.store = Store(commit_jitter=commit_jitter)
        self.log: list[tuple] = []
        self.clients: list = []  # every client made, to check how each was closed
        self.session_services: list = []  # every ISession proxy handed out
        self.imports = Imports(self)
        self.commands: list = []  # every server command (import, delete) started
        self.corrupt_uploads = False  # flip a byte of every block, as a broken network would
        self.repository_free: int | None = None  # bytes the repository's disk can still take
        self.step_seconds = 0.01  # each import step's duration
        self.fail_at_step: int | None = None  # the import step that fails (0: metadata, 1: pixels...)
        self.step_failure = "Bio-Formats could not read the pixel data"
        self.step_error = "import-request-failure"  # the ERR name of a failing step (ManagedImportRequestI.step)
        self.min_max_in_file = False  # pixelData then leaves Pixels.sha1 "Pending..." (no statistics computed)
        self.step_gates: dict[int, threading.Event] = {}  # step -> event a command waits for before it
        self.callbacks = "on-time"  # or "lost", or "late" (after late_seconds)
        self.late_seconds = 0.5
        self.faults: dict[str, list[Exception]] = {}  # call name -> exceptions its next calls raise
        self.last_import: tuple | None = None  # (fileset, settings, ctx) of the last importFileset
        # Proxies for CmdCallbackI's servants: a real communicator, never connected anywhere.
        self.communicator = Ice.initialize()
        self._servants: dict[str, object] = {}
        self.files = FakeFiles(self.store, self.log)  # files beside images: RawFileStore, FileAnnotations

    def close(self) -> None:
        for command in self.commands:
            command.cancel_requested.set()
            command.done.wait(timeout=10)
        self.communicator.destroy()

    # -- the client -----------------------------------------------------------------------------

    def client_factory(self, host=None, port=None):
        client = strict(omero.clients.BaseClient)
        state = {"sf": None, "session": None, "detached": False, "keep_alive": False, "commands": []}

        def attach(session: SessionRow):
            session.refcount += 1
            state["session"], state["sf"] = session, self._service_factory(session, state)
            return state["sf"]

        def join(key):
            self.log.append(("client.joinSession",))
            self._check_reachable()
            self.fault("client.joinSession")
            session = self.store.live_session(key)
            if session is None:
                raise Glacier2.PermissionDeniedException(f"Password check failed for '{key}'")
            return attach(session)

        def create(username=None, password=None):
            self._check_reachable()
            self.fault("client.createSession")
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
            for command in state["commands"]:  # the connection's handles close: a running command is cancelled
                command.close()
            session, state["sf"] = state["session"], None
            if session is not None:
                session.refcount -= 1
                session.keepers -= state["keep_alive"]
                state["keep_alive"] = False
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
        def enable_keep_alive(seconds):
            # BaseClient.enableKeepAlive: a thread pings the session every `seconds` while connected.
            session = state["session"]
            if session is not None and not state["keep_alive"] and (
                    not session.time_to_idle or seconds < session.time_to_idle):
                state["keep_alive"] = True
                session.keepers += 1

        adapter = self._adapter()
        client.getManagedRepository.side_effect = lambda description=False: self.imports.repository(
            state["session"], state["commands"])
        client.createClient.side_effect = lambda secure: self._plain_client(state)
        client.enableKeepAlive.side_effect = enable_keep_alive
        client.getAdapter.side_effect = lambda: adapter
        client.getCategory.side_effect = lambda: "fake-client-category"
        self.clients.append(client)
        return client

    def _plain_client(self, state):
        other = self.client_factory()
        other.joinSession(state["session"].uuid)
        return other

    def _adapter(self):
        """The client's Ice object adapter, where CmdCallbackI registers itself."""
        adapter = strict(Ice.ObjectAdapter)

        def add(servant, identity):
            key = Ice.identityToString(identity)
            self._servants[key] = servant
            return self.communicator.stringToProxy(key)

        adapter.add.side_effect = add
        adapter.remove.side_effect = lambda identity: self._servants.pop(Ice.identityToString(identity), None)
        return adapter

    def servant(self, proxy):
        """The callback servant behind a proxy a client passed to the server."""
        return self._servants[Ice.identityToString(proxy.ice_getIdentity())]

    def fault(self, name: str) -> None:
        """Raise the next exception a test queued for this call, if any."""
        queued = self.faults.get(name)
        if queued:
            raise queued.pop(0)

    def fail(self, name: str, *errors: Exception) -> None:
        """The next calls named `name` raise these, one each."""
        self.faults.setdefault(name, []).extend(errors)

    def web_session(self, username: str) -> str:
        """A session key as OMERO.web's token page hands out: it idles out after 10 minutes."""
        return self.store.new_session(self.store.users[username], refcount=1,
                                      time_to_idle=WEB_SESSION_IDLE_SECONDS).uuid

    def _check_reachable(self):
        if not self.store.reachable:
            raise Ice.ConnectionRefusedException()

    def live(self, session: SessionRow):
        """The session's user; raises as the server does for a session that is gone or idled out."""
        self._check_reachable()
        was_alive = session.alive
        if not self.store.touch(session):
            if was_alive:
                raise omero.SessionTimeoutException(None, None, f"Session {session.uuid} exceeded timeToIdle")
            raise omero.RemovedSessionException(None, None, f"Session {session.uuid} was removed")
        return self.store.user_by_id(session.user)

    # -- services -------------------------------------------------------------------------------

    def _service_factory(self, session: SessionRow, state: dict):
        sf = strict(ServiceFactoryPrx)
        sf.ice_getIdentity.side_effect = lambda: Ice.Identity(session.uuid, "")

        def detach():
            self.live(session)
            state["detached"] = True
            self.log.append(("sf.detachOnDestroy",))

        def keep_alive(proxy):
            self.live(session)  # touches the session
            self.log.append(("sf.keepAlive",))
            # Like ServiceFactoryI.keepAlive: the answer is about the service proxy passed; none -> False.
            return proxy is not None

        sf.detachOnDestroy.side_effect = detach
        sf.keepAlive.side_effect = keep_alive
        sf.getQueryService.side_effect = lambda: self._query(session)
        sf.getUpdateService.side_effect = lambda: self._update(session)
        sf.getAdminService.side_effect = lambda: self._admin(session)
        sf.getSessionService.side_effect = lambda: self._session_service(session)
        sf.getConfigService.side_effect = lambda: self._config(session)
        sf.submit.side_effect = lambda req, _ctx=None: self._submit(session, state["commands"], req, _ctx)
        sf.createRawFileStore.side_effect = lambda _ctx=None: self.files.raw_file_store(lambda: self.live(session))
        sf.createThumbnailStore.side_effect = lambda _ctx=None: self.files.thumbnail_store(lambda: self.live(session))
        return sf

    def _config(self, session):
        self.live(session)
        prx = strict(IConfigPrx)
        prx.getVersion.side_effect = lambda: (self.live(session), "5.6.14-ice36")[1]
        return prx

    def _submit(self, session, connection, request, ctx):
        if not isinstance(request, Delete2):
            raise NotImplementedError(f"fake OMERO cannot run {request!r}")
        return delete_images(self, session, connection, request, ctx)

    def _query(self, session):
        user = self.live(session)
        fake = FakeQuery(self.store, user, self.log)
        fake.projections.update(self.files.projections(user))
        prx = strict(IQueryPrx)

        def find_all(query, params, _ctx=None):
            self.live(session)
            self.fault("query")
            return fake.findAllByQuery(query, params, _ctx)

        def projection(query, params, _ctx=None):
            self.live(session)
            self.fault("query")
            return fake.projection(query, params, _ctx)

        prx.findAllByQuery.side_effect = find_all
        prx.projection.side_effect = projection
        return prx

    def _admin(self, session):
        self.live(session)
        store = self.store
        prx = strict(IAdminPrx)

        def group(gid):
            if gid not in store.groups:  # as IAdmin.getGroup answers for an id that names no group
                raise omero.ApiUsageException(None, None, f"No group with id {gid}")
            g = ExperimenterGroupI(gid, True)
            g.setName(rstring(store.groups[gid].name))
            return g

        def event_context():
            user = self.live(session)
            return EventContext(
                sessionUuid=session.uuid, userId=user.id, userName=user.name, groupId=user.groups[0],
                groupName=store.groups[user.groups[0]].name, isAdmin=user.admin,
                memberOfGroups=list(user.groups), leaderOfGroups=list(user.leads),
            )

        def experimenter(uid):
            self.live(session)
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
        self.live(session)
        prx = strict(ISessionPrx)

        def create_with_timeout(principal, timeToLiveMilliseconds):
            caller = self.live(session)
            user = self.store.users.get(principal.name)
            if user is None:
                if not principal.group:  # validateSessionInputs: "user" -> the user's default group
                    # ApiUsageException "Can't find default group", as creationExceptionHandler wraps it
                    raise omero.AuthenticationException("Error creating session.")
                raise omero.RemovedSessionException(None, None, f"Cannot find a user with name {principal.name}")
            if not (caller.admin and caller.sudo):  # groupsLed: only in a group the caller leads
                gid = next((g.id for g in self.store.groups.values() if g.name == principal.group), user.groups[0])
                if gid not in caller.leads:
                    raise omero.SecurityViolation(None, None, f"Group sudo is not permitted for group "
                                                              f"{self.store.groups[gid].name} (gid={gid})")
            self.log.append(("session.createSessionWithTimeout", principal.name, timeToLiveMilliseconds))
            s = SessionI()
            s.setUuid(rstring(self.store.new_session(user, refcount=0).uuid))
            return s

        prx.createSessionWithTimeout.side_effect = create_with_timeout
        self.session_services.append(prx)
        return prx

    def _update(self, session):
        self.live(session)
        prx = strict(IUpdatePrx)
        store = self.store

        def save_and_return(obj, _ctx=None):
            user = self.live(session)
            (gid,) = store.groups_in_scope(user, _ctx, writing=True)
            name = unwrap(obj.getTextValue() if isinstance(obj, TagAnnotationI) else obj.getName())
            self.log.append(("update.saveAndReturnObject", type(obj).__name__, name))
            if isinstance(obj, MapAnnotationI) and rid(obj) is not None:
                return self._update_map(user, gid, obj)
            if isinstance(obj, TagAnnotationI) and rid(obj) is None:
                rows = [Row("tag", store.allocate(), user.id, gid, {"text": name, "ns": unwrap(obj.getNs())})]
            elif isinstance(obj, ProjectI) and rid(obj) is None:
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
            (saved.setTextValue if isinstance(saved, TagAnnotationI) else saved.setName)(rstring(name))
            return saved

        def delete(row, _ctx=None):
            user = self.live(session)
            target = store.rows.get(rid(row))
            kinds = {ProjectI: "project", DatasetI: "dataset", ProjectDatasetLinkI: "pdlink", ImageI: "image",
                     TagAnnotationI: "tag", OriginalFileI: "file"}
            self.log.append(("update.deleteObject", type(row).__name__, rid(row)))
            if target is None or target.kind != kinds.get(type(row)):
                raise omero.ValidationException(None, None, f"No such object: {row!r}")
            if target.owner != user.id:
                raise omero.SecurityViolation(None, None, "Cannot delete another user's object")
            # No cascade: a row still referenced by a link or pixels cannot go (a foreign key in OMERO).
            links = store.select("pdlink") + store.select("dilink") + store.select("ialink")
            referenced = [r for r in links if target.id in (r.fields["parent"], r.fields["child"])]
            referenced += store.select("pixels", image=target.id)
            referenced += [r for r in store.select("fileann") + store.select("entry") if r.fields["file"] == target.id]
            if target.kind != "pdlink" and referenced:
                raise omero.ValidationException(None, None, f"{target.kind} {target.id} is still linked")
            store.delete(target.id)

        prx.saveAndReturnObject.side_effect = save_and_return
        prx.saveAndReturnArray.side_effect = lambda objs, _ctx=None: self.files.save_links(
            self.live(session), store.groups_in_scope(self.live(session), _ctx, writing=True)[0], objs)
        prx.deleteObject.side_effect = delete
        return prx

    def _update_map(self, user, gid: int, obj: MapAnnotationI) -> MapAnnotationI:
        """IUpdate.saveAndReturnObject of a loaded MapAnnotation: its pairs replaced, by its owner."""
        row = self.store.rows.get(rid(obj))
        if row is None or row.kind != "map" or row.group != gid:
            raise omero.ValidationException(None, None, f"No such MapAnnotation {rid(obj)} in this group")
        if row.owner != user.id:
            raise omero.SecurityViolation(None, None, f"Cannot update another user's annotation {row.id}")
        with self.store.lock:
            row.fields["pairs"] = [(nv.name, nv.value) for nv in obj.getMapValue() or []]
        self.log.append(("update.saveAndReturnObject", "MapAnnotationI", row.id))
        return obj

    # -- helpers for tests ----------------------------------------------------------------------

    def calls(self, *names: str) -> list[tuple]:
        """The logged calls with these names, in order (all when no names are given)."""
        return [c for c in self.log if not names or c[0] in names]

    def rows(self, kind: str, **where) -> list[Row]:
        return self.store.select(kind, **where)


def lab_id(server: FakeOmero) -> int:
    return next(g.id for g in server.store.groups.values() if g.name == "Lab")
