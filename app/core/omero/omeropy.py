"""The production OMERO boundary: omero-py against a real OMERO server.

One omero.client per task: `gateway.session(key)` joins the user's session, marks it to be detached
(not destroyed) when we disconnect, and disconnects on the way out. The session belongs to the user
and to OMERO.web; killing it (client.killSession, BlitzGateway.close(hard=True)) would sign the user
out everywhere, so nothing here does, except `close_session` for a session the portal itself made
with the admin connection (ADFS sign-in), at the user's sign-out.

The group of each call travels in that call's context (`{"omero.group": "<id>"}`): switching the
shared session's group (setSecurityContext / setGroupForSession) would move the user's other
running jobs too.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import Glacier2
import Ice
import omero
import omero.clients
from omero.cmd import ERR, Delete2
from omero.model import DatasetI, NamedValue, ProjectDatasetLinkI, ProjectI, TagAnnotationI
from omero.rtypes import rint, rstring, unwrap
from omero.sys import Principal
from omero_version import omero_version

from app.core.omero import omeropy_files as files_io
from app.core.omero import omeropy_queries as q
from app.core.omero.base import (
    COMPLETE_KEY, Annotations, FileToAttach, Group, Identity, ImageRef, OmeroError, PartOfFileset, PermissionDenied,
    Placement, Progress,
    SessionExpired, StoredFile,
)
from app.core.omero.omeropy_errors import command_failed, translate_errors
from app.core.omero.omeropy_import import build_annotations, import_fileset, linkable_tag_ids, new_tag, wait_for

log = logging.getLogger(__name__)

ALL_GROUPS = "-1"  # omero.group context value: search every group the user is a member of


class OmeroPyGateway:
    def __init__(
        self, host: str, port: int = 4064, web_url: str = "", admin_user: str | None = None,
        admin_password: str | None = None, secure: bool = True, *,
        client_factory: Callable[..., omero.clients.BaseClient] | None = None,
        keep_alive_seconds: int = 60, settle_seconds: float = 1.0, import_timeout_seconds: float = 6 * 3600,
        poll_seconds: float = 5.0,
    ):
        self.host = host
        self.port = int(port)
        self.web_url = (web_url or f"https://{host}").rstrip("/")
        self.admin_user = admin_user
        self.admin_password = admin_password
        self.secure = secure
        self._client_factory = client_factory or omero.client
        self.keep_alive_seconds = keep_alive_seconds
        # How long a get-or-create winner waits for a competitor's slower commit (see _one_of).
        self.settle_seconds = settle_seconds
        self.import_timeout_seconds = import_timeout_seconds
        # How often a wait on a server command asks the handle itself (its callback can be lost).
        self.poll_seconds = poll_seconds

    def image_url(self, image_id: int) -> str:
        return f"{self.web_url}/webclient/?show=image-{image_id}"

    def _new_client(self) -> omero.clients.BaseClient:
        with translate_errors():
            return self._client_factory(host=self.host, port=self.port)

    def _join(self, key: str):
        client = self._new_client()
        try:
            with translate_errors(joining=True):
                sf = client.joinSession(key)
                # On disconnect, drop our reference to the session instead of closing it.
                sf.detachOnDestroy()
                if not self.secure:
                    # Bulk data over the server's plain router; the login above stayed encrypted.
                    plain = client.createClient(False)
                    plain.getSession().detachOnDestroy()
                    _disconnect(client)
                    client, sf = plain, plain.getSession()
        except BaseException:
            _disconnect(client)
            raise
        return client, sf

    @contextmanager
    def session(self, key: str) -> Iterator[OmeroPySession]:
        if not key:
            raise SessionExpired()
        client, sf = self._join(key)
        try:
            # Touch the session while we wait on long server-side work (imports can take hours).
            client.enableKeepAlive(self.keep_alive_seconds)
            yield OmeroPySession(self, client, sf)
        finally:
            _disconnect(client)

    def keep_alive(self, key: str) -> bool:
        try:
            with self.session(key) as session, translate_errors():
                # Joining proved the session alive; keepAlive touches it (its boolean is about the
                # service proxy passed, and the server answers False for none, so it is not ours).
                session.sf.keepAlive(None)
            return True
        except SessionExpired:
            return False

    @property
    def can_create_sessions(self) -> bool:
        return bool(self.admin_user and self.admin_password)

    def close_session(self, key: str) -> None:
        if not key:
            return
        client = self._new_client()
        try:
            with translate_errors(joining=True):
                client.joinSession(key)
            with translate_errors():
                # The portal made this session and is its only user: closing it for everyone is right.
                client.killSession()
        except SessionExpired:
            pass  # already gone: what we wanted
        finally:
            _disconnect(client)

    def create_session(self, username: str, ttl_seconds: int) -> str:
        if not self.can_create_sessions:
            raise OmeroError("No OMERO admin account is configured: staff import and sign-in are off")
        client = self._new_client()
        try:
            with translate_errors(opening=True):
                sf = client.createSession(self.admin_user, self.admin_password)
                principal = Principal(name=username, group="", eventType="User")
                try:
                    created = sf.getSessionService().createSessionWithTimeout(principal, int(ttl_seconds * 1000))
                # SessionManagerImpl: an unknown name has no default group (ApiUsageException, which
                # SessionBean.creationExceptionHandler turns into AuthenticationException), or no user
                # row (RemovedSessionException, which elsewhere means an expired session).
                except (omero.AuthenticationException, omero.ApiUsageException, omero.RemovedSessionException) as e:
                    raise OmeroError(f"OMERO would not open a session for {username}: OMERO has no "
                                     f"active user of that name ({getattr(e, 'message', None) or e.reason})") from e
                except omero.SecurityViolation as e:
                    # SessionBean: without the Sudo privilege, only for members of groups the account leads
                    raise OmeroError(
                        f"The portal's OMERO admin account ({self.admin_user}) may not open sessions for "
                        f"{username} ({e.message}): give it the Sudo privilege, make it a full admin, or "
                        f"make it an owner of {username}'s default group") from e
                return unwrap(created.getUuid())
        finally:
            # Our own admin session: closing it is right (it was not detached).
            _disconnect(client)


def _disconnect(client) -> None:
    try:
        client.closeSession()
    except (Ice.LocalException, Glacier2.SessionNotExistException) as e:
        # Leaving is best effort: the server drops the connection's session reference itself.
        log.info("while disconnecting from OMERO: %s", type(e).__name__)


class OmeroPySession:
    def __init__(self, gateway: OmeroPyGateway, client, sf):
        self.gateway = gateway
        self.client = client
        self.sf = sf
        self._group_names: dict[int, str] = {}

    @cached_property
    def _query(self):
        with translate_errors():
            return self.sf.getQueryService()

    @cached_property
    def _update(self):
        with translate_errors():
            return self.sf.getUpdateService()

    @cached_property
    def _event_context(self):
        with translate_errors():
            return self.sf.getAdminService().getEventContext()

    @property
    def _uid(self) -> int:
        return self._event_context.userId

    def _ctx(self, group_id: int | None) -> dict[str, str]:
        return {"omero.group": ALL_GROUPS if group_id is None else str(int(group_id))}

    def _group_label(self, group_id: int | None) -> Callable[[], str | None]:
        """How to name the group in an error message; looked up only when a message needs it."""
        def label() -> str | None:
            if group_id is None:
                return None
            if group_id not in self._group_names:
                try:
                    group = self.sf.getAdminService().getGroup(group_id)
                    self._group_names[group_id] = unwrap(group.getName())
                except (omero.ServerError, Ice.LocalException):
                    return f"with id {group_id}"  # the message matters more than the name
            return f"'{self._group_names[group_id]}' (id {group_id})"
        return label

    def whoami(self) -> Identity:
        with translate_errors():
            admin = self.sf.getAdminService()
            ec = self._event_context
            user = admin.getExperimenter(ec.userId)
            default_id = admin.getDefaultGroup(ec.userId).getId().getValue()
            roles = admin.getSecurityRoles()
            contained = admin.containedGroups(ec.userId)
        # OMERO's built-in groups ("user", "system", "guest") are not places to import into.
        builtin = {roles.userGroupId, roles.systemGroupId, roles.guestGroupId}
        groups = [Group(g.getId().getValue(), unwrap(g.getName())) for g in contained
                  if g.getId().getValue() not in builtin]
        groups.sort(key=lambda g: (g.id != default_id, g.name.lower()))
        self._group_names.update((g.id, g.name) for g in groups)
        if groups and groups[0].id != default_id:
            default_id = groups[0].id  # the default is a built-in group (e.g. an admin's "system")
        full_name = " ".join(filter(None, (unwrap(user.getFirstName()), unwrap(user.getLastName()))))
        return Identity(
            user_id=ec.userId, username=ec.userName, full_name=full_name or ec.userName,
            groups=tuple(groups), default_group_id=default_id, is_admin=bool(ec.isAdmin),
            email=unwrap(user.getEmail()) or "",
        )

    # -- placement ------------------------------------------------------------------------------

    def get_or_create_dataset(self, group_id: int, project: str, dataset: str) -> Placement:
        ctx = self._ctx(group_id)
        with translate_errors(group=self._group_label(group_id)):
            project_id = self._one_of(
                find=lambda: self._project_ids(project, ctx),
                create=lambda: self._create_project(project, ctx),
                discard=lambda pid: self._update.deleteObject(ProjectI(pid, False), ctx),
            )
            dataset_id = self._one_of(
                find=lambda: [d for d, _ in self._dataset_links(project_id, dataset, ctx)],
                create=lambda: self._create_dataset(project_id, dataset, ctx),
                discard=lambda did: self._discard_dataset(project_id, dataset, did, ctx),
            )
        return Placement(project_id, project, dataset_id, dataset)

    def _one_of(self, find, create, discard) -> int:
        """The oldest (lowest id) of the user's matching objects, creating one when there is none.

        OMERO has no unique names, so workers that all find nothing all create. Each creator then
        waits `settle_seconds` and reads again; the lowest id wins and every other creator discards
        its own object, which nobody else has been given yet. Why this converges: ids come from a
        sequence before the transaction commits, so any id lower than mine was allocated before mine
        and, transactions being far shorter than the settle time, has committed by the time I read
        again. Every creator therefore sees the same lowest id. (A worker that merely finds an object
        while such a race settles may pick a loser; it then fails on a discarded object and its retry
        finds the winner. That needs two creates and a find within one settle time.)
        """
        ids = find()
        if ids:
            return ids[0]
        mine = create()
        time.sleep(self.gateway.settle_seconds)
        ids = find()
        winner = min(ids) if ids else mine
        if winner != mine:
            try:
                discard(mine)
            except omero.ValidationException:
                # deleteObject does not cascade and refuses an object something links to.
                log.warning("kept a duplicate OMERO container %s: it is no longer empty", mine)
        return winner

    def _project_ids(self, name: str, ctx: dict) -> list[int]:
        found = self._query.findAllByQuery(q.PROJECTS_BY_NAME, q.projects_params(name, self._uid), ctx)
        return sorted(p.getId().getValue() for p in found)

    def _dataset_links(self, project_id: int, name: str, ctx: dict) -> list[tuple[int, int]]:
        """(dataset id, link id) of the user's datasets of this name under the project."""
        links = self._query.findAllByQuery(
            q.DATASET_LINKS_BY_NAME, q.dataset_links_params(project_id, name, self._uid), ctx)
        return sorted((link.getChild().getId().getValue(), link.getId().getValue()) for link in links)

    def _create_project(self, name: str, ctx: dict) -> int:
        p = ProjectI()
        p.setName(rstring(name))
        return self._update.saveAndReturnObject(p, ctx).getId().getValue()

    def _create_dataset(self, project_id: int, name: str, ctx: dict) -> int:
        d = DatasetI()
        d.setName(rstring(name))
        d.linkProject(ProjectI(project_id, False))  # dataset and link in one transaction
        return self._update.saveAndReturnObject(d, ctx).getId().getValue()

    def _discard_dataset(self, project_id: int, name: str, dataset_id: int, ctx: dict) -> None:
        for did, link_id in self._dataset_links(project_id, name, ctx):
            if did == dataset_id:
                self._update.deleteObject(ProjectDatasetLinkI(link_id, False), ctx)
        self._update.deleteObject(DatasetI(dataset_id, False), ctx)

    def remove_placement(self, group_id: int, placement: Placement) -> None:
        ctx = self._ctx(group_id)
        with translate_errors(group=self._group_label(group_id)):
            # deleteObject does not cascade: the link goes first, and a dataset still holding
            # images, or a project still holding datasets, is refused (ValidationException).
            for did, link_id in self._dataset_links(placement.project_id, placement.dataset, ctx):
                if did == placement.dataset_id:
                    self._update.deleteObject(ProjectDatasetLinkI(link_id, False), ctx)
            self._update.deleteObject(DatasetI(placement.dataset_id, False), ctx)
            try:
                self._update.deleteObject(ProjectI(placement.project_id, False), ctx)
            except omero.ValidationException:
                log.info("kept project %s: it holds other datasets", placement.project_id)

    def _tag_ids(self, texts: list[str], ctx: dict) -> list[int]:
        """One linkable tag per text, made when there is none; concurrent jobs end with one tag."""
        ids = []
        for text in dict.fromkeys(t.strip() for t in texts if t.strip()):
            ids.append(self._one_of(
                find=lambda: linkable_tag_ids(self._query, ctx, self._uid, text),
                create=lambda: self._update.saveAndReturnObject(new_tag(text), ctx).getId().getValue(),
                discard=lambda tid: self._update.deleteObject(TagAnnotationI(tid, False), ctx),
            ))
        return ids

    # -- images ---------------------------------------------------------------------------------

    def find_images(self, group_id: int | None, content_sha1: str) -> list[ImageRef]:
        ctx = self._ctx(group_id)
        sha1 = content_sha1.lower()
        with translate_errors(group=self._group_label(group_id)):
            by_file = self._query.projection(q.IMAGES_BY_FILE_SHA1, q.file_sha1_params(sha1, self._uid), ctx)
            by_prov = self._query.projection(
                q.IMAGES_BY_PROVENANCE_SHA1, q.provenance_sha1_params(sha1, self._uid), ctx)
            ids = sorted({unwrap(row[0]) for row in [*by_file, *by_prov]})
            return self._describe(ids, ctx)

    def content_sizes(self, sizes: Collection[int]) -> set[int]:
        wanted = sorted({int(s) for s in sizes})
        if not wanted:
            return set()
        ctx = self._ctx(None)
        with translate_errors(group=self._group_label(None)):
            in_filesets = self._query.projection(q.FILESET_FILE_SIZES, q.sizes_params(wanted, self._uid), ctx)
            by_source = self._query.projection(q.PROVENANCE_CONTENT_SIZES, q.provenance_sizes_params(wanted, self._uid), ctx)
        return {int(unwrap(row[0])) for row in [*in_filesets, *by_source]}

    def _describe(self, ids: list[int], ctx: dict) -> list[ImageRef]:
        """ImageRefs for these image ids: names, primary-file SHA-1s, filesets, the importing job, and
        whether the portal marked that import complete (Pixels.sha1 cannot tell: see COMPLETE_KEY)."""
        if not ids:
            return []
        images = self._query.findAllByQuery(q.IMAGES_WITH_FILES, q.ids_params(ids), ctx)
        provenance: dict[int, dict[str, str]] = {}
        for link in self._provenance_links(ids, ctx):
            provenance.setdefault(link.getParent().getId().getValue(), q.map_value(link.getChild()))
        refs = []
        for image in images:
            iid, fileset = image.getId().getValue(), image.getFileset()
            mine = provenance.get(iid, {})
            refs.append(ImageRef(id=iid, name=unwrap(image.getName()) or "", url=self.gateway.image_url(iid),
                                 sha1=q.primary_sha1(image), job_uid=mine.get("job_uid"), complete=COMPLETE_KEY in mine,
                                 fileset_id=fileset.getId().getValue() if fileset is not None else None))
        return sorted(refs, key=lambda r: r.id)

    def _provenance_links(self, ids: list[int], ctx: dict) -> list:
        return self._query.findAllByQuery(q.PROVENANCE_LINKS, q.provenance_links_params(ids), ctx)

    def mark_complete(self, group_id: int, image_ids: Sequence[int]) -> None:
        ids, ctx = sorted({int(i) for i in image_ids}), self._ctx(group_id)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with translate_errors(group=self._group_label(group_id)):
            links = self._provenance_links(ids, ctx)
            unmarked = set(ids) - {link.getParent().getId().getValue() for link in links}
            if unmarked:
                raise OmeroError(f"OMERO images {sorted(unmarked)} carry no provenance of the portal's to mark complete")
            # One import's images share its provenance annotation (PixelsProcessor links the import's
            # annotations to each image): saved once, it marks them all in one transaction.
            annotations = {link.getChild().getId().getValue(): link.getChild() for link in links}
            for annotation in annotations.values():
                pairs = [nv for nv in annotation.getMapValue() or [] if nv.name != COMPLETE_KEY]
                annotation.setMapValue([*pairs, NamedValue(COMPLETE_KEY, stamp)])
                self._update.saveAndReturnObject(annotation, ctx)

    def key_values(self, group_id: int, key: str) -> list[str]:
        with translate_errors(group=self._group_label(group_id)):
            rows = self._query.projection(q.KEY_VALUES, q.key_values_params(key, self._uid), self._ctx(group_id))
        return [value for value in (unwrap(row[0]) for row in rows) if value]

    def image_tags(self, group_id: int, image_id: int) -> list[str]:
        with translate_errors(group=self._group_label(group_id)):
            rows = self._query.projection(q.IMAGE_TAGS, q.image_tags_params(image_id, self._uid), self._ctx(group_id))
        return [unwrap(row[0]) for row in rows]

    def thumbnail(self, group_id: int, image_id: int, longest_side: int) -> bytes:
        ctx = self._ctx(group_id)
        with translate_errors(group=self._group_label(group_id)):
            rows = self._query.projection(q.IMAGE_PIXELS, q.image_tags_params(image_id, self._uid), ctx)
            if not rows:
                raise PermissionDenied(f"Image {image_id} is not yours in this group, or has no pixels")
            pixels_id = unwrap(rows[0][0])
            store = self.sf.createThumbnailStore()
            try:
                # As BlitzGateway's _prepareTB: False means the image has no rendering settings yet (no
                # one viewed it since the import); make the defaults, then ask again.
                if not store.setPixelsId(pixels_id, ctx):
                    store.resetDefaults(ctx)
                    store.setPixelsId(pixels_id, ctx)
                return store.getThumbnailByLongestSide(rint(longest_side), ctx)  # a JPEG
            finally:
                store.close()

    def import_image(
        self, group_id: int, dataset_id: int, files: Sequence[Path], *, name: str, description: str,
        annotations: Annotations, progress: Progress,
    ) -> list[ImageRef]:
        if not files:
            raise ValueError("import_image needs at least one file")
        ctx = self._ctx(group_id)
        with translate_errors(group=self._group_label(group_id)):
            annotation_list = build_annotations(annotations, self._tag_ids(annotations.tags, ctx))
            image_ids = import_fileset(
                self.client, ctx, dataset_id, files, name=name, description=description,
                annotation_list=annotation_list, progress=progress,
                timeout_seconds=self.gateway.import_timeout_seconds, poll_seconds=self.gateway.poll_seconds,
            )
            refs = self._describe(image_ids, ctx)
        if not refs:
            raise OmeroError(f"OMERO reported no image for {name}: the file format may not be supported")
        return refs

    def delete_images(self, group_id: int, image_ids: Sequence[int]) -> None:
        if not image_ids:
            return
        ctx = self._ctx(group_id)
        with translate_errors(group=self._group_label(group_id)):
            # Delete2 would refuse part of a fileset ("may not delete I1 while I2 remains"), after
            # starting a command: say which images belong together before asking.
            rows = self._query.projection(q.FILESET_IMAGES, q.ids_params(sorted({int(i) for i in image_ids})), ctx)
            remaining = [unwrap(row[0]) for row in rows if unwrap(row[0]) not in set(image_ids)]
            if remaining:
                raise PartOfFileset(f"OMERO images {', '.join(map(str, image_ids))} are part of an import whose images "
                                    f"{', '.join(map(str, remaining))} remain: they are deleted together or not at all")
            # Delete2 follows the server's graph rules (blitz-delete-rules.xml): the images' pixels,
            # fileset and links go, with the annotations nothing else links to; a tag another image
            # carries stays. IUpdate.deleteObject would refuse an image anything links to.
            handle = self.sf.submit(Delete2(targetObjects={"Image": [int(i) for i in image_ids]}), ctx)
            response = wait_for(self.client, handle, "removing an unfinished import",
                                self.gateway.import_timeout_seconds, self.gateway.poll_seconds)
        if isinstance(response, ERR):
            raise command_failed(f"remove images {', '.join(map(str, image_ids))}", response)

    def delete_unused_filesets(self, group_id: int, sha1: str) -> None:
        ctx = self._ctx(group_id)
        with translate_errors(group=self._group_label(group_id)):
            rows = self._query.projection(q.UNUSED_FILESETS_BY_SHA1, q.file_sha1_params(sha1.lower(), self._uid), ctx)
            ids = [unwrap(row[0]) for row in rows]
            if not ids:
                return
            handle = self.sf.submit(Delete2(targetObjects={"Fileset": ids}), ctx)
            response = wait_for(self.client, handle, "removing an import OMERO refused",
                                self.gateway.import_timeout_seconds, self.gateway.poll_seconds)
        if isinstance(response, ERR):
            raise command_failed(f"remove filesets {', '.join(map(str, ids))}", response)

    def server_version(self) -> str:
        with translate_errors():
            return f"OMERO {self.sf.getConfigService().getVersion()} (omero-py {omero_version})"


    # -- files beside images (omeropy_files) ----------------------------------------------------

    def attach_files(
        self, group_id: int, image_ids: Sequence[int], files: Sequence[FileToAttach], namespace: str,
        progress: Progress,
    ) -> list[StoredFile]:
        with translate_errors(group=self._group_label(group_id)):
            return files_io.attach(self.sf, self._ctx(group_id), image_ids, files, namespace, progress)

    def stored_files(self, group_id: int | None, image_id: int) -> list[StoredFile]:
        with translate_errors(group=self._group_label(group_id)):
            return files_io.stored(self._query, self._ctx(group_id), image_id)

    def read_file(self, group_id: int, file_id: int) -> Iterator[bytes]:
        with translate_errors(group=self._group_label(group_id)):
            return files_io.read(self.sf, self._ctx(group_id), file_id)
