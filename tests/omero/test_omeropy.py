"""The omero-py adapter against the strict fake: what it sends to OMERO, call by call."""
from __future__ import annotations

import threading

import pytest

from .requirements import require_omero_py

require_omero_py()

from omero.model import DatasetI, MapAnnotationI, ProjectI, TagAnnotationI  # noqa: E402
from omero.rtypes import rstring, unwrap  # noqa: E402

from app.core.omero.base import (  # noqa: E402
    CLIENT_KV_NAMESPACE,
    METADATA_NAMESPACE,
    PROVENANCE_NAMESPACE,
    Annotations,
    OmeroError,
    PermissionDenied,
    ServerUnreachable,
    SessionExpired,
)
from app.core.omero.omeropy import OmeroPyGateway  # noqa: E402
from app.core.omero.omeropy_errors import UploadCorrupted  # noqa: E402
from app.core.omero.omeropy_import import BLOCK  # noqa: E402
from tests.helpers import data_file  # noqa: E402

from .fake_omero import lab_id  # noqa: E402

ANNOTATIONS = Annotations(
    key_values=[("Microscope", "Krios"), ("Operator", "alice")], tags=["cryo", "grid-3", "cryo"],
    metadata={"Voltage": "300 kV"}, provenance={"content_sha1": "ab" * 20, "job_uid": "job-42"},
)


@pytest.fixture
def alice(omero_gateway):
    return omero_gateway.create_session("alice", 3600)


@pytest.fixture
def imported(omero_gateway, fake_omero, alice, tmp_path):
    """One 2.5-block file imported by alice into Lab / Krios / 2026-11-21."""
    path, sha1 = data_file(tmp_path, 2 * BLOCK + BLOCK // 2)
    progress = []
    with omero_gateway.session(alice) as s:
        placement = s.get_or_create_dataset(lab_id(fake_omero), "Krios", "2026-11-21")
        fake_omero.log.clear()
        refs = s.import_image(lab_id(fake_omero), placement.dataset_id, [path], name="grid", description="a grid",
                              annotations=ANNOTATIONS, progress=lambda *a: progress.append(a))
    return refs, placement, path, sha1, progress


def test_import_makes_exactly_these_calls(imported, fake_omero):
    refs, placement, path, sha1, progress = imported
    gid = str(lab_id(fake_omero))
    # the adapter's own calls, in its order; when the server's command ended relative to them is the
    # server thread's business (only that it ended before the handle was closed: handle.close False)
    calls = fake_omero.calls("mrepo.importFileset", "proc.getUploader", "uploader.write", "uploader.close",
                             "proc.verifyUpload", "handle.addCallback", "handle.close", "proc.close")
    size = path.stat().st_size
    assert [c[:1] if c[0] == "handle.addCallback" else c for c in calls] == [
        ("mrepo.importFileset", {"omero.group": gid}),
        ("proc.getUploader", 0),
        ("uploader.write", 0, 0, BLOCK), ("uploader.write", 0, BLOCK, BLOCK),
        ("uploader.write", 0, 2 * BLOCK, size - 2 * BLOCK),
        ("uploader.close", 0),  # before verifyUpload: the server hashes a file when its uploader closes
        ("proc.verifyUpload", [sha1]),
        ("handle.addCallback",),  # omero-py's CmdCallbackI (registered before or after the end: both work)
        ("handle.close", False),  # closed after the end: nothing cancelled
        ("proc.close",),
    ]
    assert progress[0] == (0, size) and progress[-1] == (size, size)
    assert fake_omero.calls("command.end") == [("command.end", "ImportResponse")]
    (fileset,) = fake_omero.rows("fileset")
    # made, not yet complete: only the portal's mark, after its checks, makes it so
    assert [(r.name, r.sha1, r.job_uid, r.complete, r.fileset_id) for r in refs] == [
        ("grid", sha1, "job-42", False, fileset.id)]
    assert refs[0].url == f"https://omero.example.org/webclient/?show=image-{refs[0].id}"


def test_import_settings(imported, fake_omero):
    refs, placement, path, _, _ = imported
    fileset, settings, ctx = fake_omero.last_import
    assert ctx == {"omero.group": str(lab_id(fake_omero))}
    assert [unwrap(e.getClientPath()) for e in fileset.copyUsedFiles()] == [str(path.resolve())]
    assert unwrap(settings.checksumAlgorithm.getValue()) == "SHA1-160"
    target = settings.userSpecifiedTarget
    assert isinstance(target, DatasetI) and not target.isLoaded() and unwrap(target.getId()) == placement.dataset_id
    assert unwrap(settings.userSpecifiedName) == "grid" and unwrap(settings.userSpecifiedDescription) == "a grid"
    assert unwrap(settings.doThumbnails) is True


def test_annotations_travel_with_the_import(imported, fake_omero):
    _, _, _, _, _ = imported
    settings = fake_omero.last_import[1]
    anns = settings.userSpecifiedAnnotationList
    maps = {unwrap(a.getNs()): [(nv.name, nv.value) for nv in a.getMapValue()]
            for a in anns if isinstance(a, MapAnnotationI)}
    assert maps == {
        CLIENT_KV_NAMESPACE: [("Microscope", "Krios"), ("Operator", "alice")],
        METADATA_NAMESPACE: [("Voltage", "300 kV")],
        PROVENANCE_NAMESPACE: [("content_sha1", "ab" * 20), ("job_uid", "job-42")],
    }
    tags = [fake_omero.store.rows[unwrap(a.getId())].fields["text"] for a in anns if isinstance(a, TagAnnotationI)]
    assert tags == ["cryo", "grid-3"]  # each text once, linked by id
    (image,) = fake_omero.rows("image")
    assert len(fake_omero.rows("ialink", parent=image.id)) == 5


def test_tags_are_reused_by_a_targeted_query(omero_gateway, fake_omero, alice, tmp_path):
    gid = lab_id(fake_omero)
    with omero_gateway.session(alice) as s:
        ds = s.get_or_create_dataset(gid, "Krios", "2026-11-21").dataset_id
        for n, tags in enumerate((["cryo"], ["cryo", "new"])):
            path, _ = data_file(tmp_path, 100 + n, f"f{n}.tif")
            fake_omero.log.clear()
            s.import_image(gid, ds, [path], name=path.name, description="",
                           annotations=Annotations(tags=tags), progress=lambda *a: None)
    queries = [c for c in fake_omero.calls("query.findAllByQuery") if c[1] == "tags"]
    # One query per tag text (and one more after making a new one, see _one_of); nothing listed.
    assert [c[2]["text"] for c in queries] == ["cryo", "new", "new"]
    linked = [a for a in fake_omero.last_import[1].userSpecifiedAnnotationList if isinstance(a, TagAnnotationI)]
    assert all(a.isLoaded() is False for a in linked)  # linked by id, never copied
    assert [unwrap(a.getId()) for a in linked] == [fake_omero.rows("tag", text=t)[0].id for t in ("cryo", "new")]
    assert len(fake_omero.rows("tag", text="cryo")) == 1


@pytest.mark.parametrize("perms, reused", [("rwr---", False), ("rwra--", True)])
def test_another_members_tag_is_reused_only_where_linking_is_allowed(
        omero_gateway, fake_omero, tmp_path, perms, reused):
    gid = fake_omero.store.add_group(f"Group-{perms}", perms)
    fake_omero.store.users["alice"].groups.insert(0, gid)
    fake_omero.store.users["bob"].groups.insert(0, gid)
    for n, user in enumerate(("bob", "alice")):
        with omero_gateway.session(omero_gateway.create_session(user, 600)) as s:
            ds = s.get_or_create_dataset(gid, "P", "D").dataset_id
            path, _ = data_file(tmp_path, 50 + n, f"{user}.tif")
            s.import_image(gid, ds, [path], name=user, description="", annotations=Annotations(tags=["shared"]),
                           progress=lambda *a: None)
    assert len(fake_omero.rows("tag", text="shared")) == (1 if reused else 2)


def test_duplicates_are_found_by_targeted_queries(imported, omero_gateway, fake_omero, alice):
    refs, _, _, sha1, _ = imported
    fake_omero.log.clear()
    with omero_gateway.session(alice) as s:
        uid = s.whoami().user_id
        assert [r.id for r in s.find_images(lab_id(fake_omero), sha1.upper())] == [refs[0].id]
    queries = {c[1]: (c[2], c[3]) for c in fake_omero.calls("query.projection")}
    ctx = {"omero.group": str(lab_id(fake_omero))}
    assert queries["images_by_file"] == ({"sha1": sha1, "hasher": "SHA1-160", "owner": uid}, ctx)
    assert queries["images_by_provenance"] == (
        {"ns": PROVENANCE_NAMESPACE, "key": "content_sha1", "sha1": sha1, "owner": uid}, ctx)


def test_key_values_are_one_targeted_query_in_the_calls_group(imported, omero_gateway, fake_omero, alice):
    other = fake_omero.store.add_group("Other")
    fake_omero.store.users["alice"].groups.append(other)
    fake_omero.log.clear()
    with omero_gateway.session(alice) as s:
        uid = s.whoami().user_id
        assert s.key_values(lab_id(fake_omero), "Operator") == ["alice"]
        assert s.key_values(lab_id(fake_omero), "Voltage") == []  # metadata, not the editable namespace
        assert s.key_values(other, "Operator") == []
    calls = [c for c in fake_omero.calls("query.projection") if c[1] == "key_values"]
    assert [(c[2], c[3]) for c in calls] == [
        ({"ns": CLIENT_KV_NAMESPACE, "key": "Operator", "owner": uid}, {"omero.group": str(lab_id(fake_omero))}),
        ({"ns": CLIENT_KV_NAMESPACE, "key": "Voltage", "owner": uid}, {"omero.group": str(lab_id(fake_omero))}),
        ({"ns": CLIENT_KV_NAMESPACE, "key": "Operator", "owner": uid}, {"omero.group": str(other)}),
    ]


def test_key_values_are_paged_to_the_limit(omero_gateway, fake_omero, alice, tmp_path, monkeypatch):
    from app.core.omero import omeropy_queries

    monkeypatch.setattr(omeropy_queries, "KEY_VALUES_LIMIT", 2)
    gid = lab_id(fake_omero)
    with omero_gateway.session(alice) as s:
        ds = s.get_or_create_dataset(gid, "P", "D").dataset_id
        for n, value in enumerate(("c", "a", "b")):
            path, _ = data_file(tmp_path, 20 + n, f"{value}.tif")
            s.import_image(gid, ds, [path], name=value, description="",
                           annotations=Annotations(key_values=[("Sample", value)]), progress=lambda *a: None)
        assert s.key_values(gid, "Sample") == ["a", "b"]


def test_sessions_are_left_never_killed(omero_gateway, fake_omero, alice):
    fake_omero.log.clear()  # forget the admin connection that made the key
    with pytest.raises(RuntimeError):
        with omero_gateway.session(alice) as s:
            s.whoami()
            raise RuntimeError("a task failed half-way")
    assert omero_gateway.keep_alive(alice)
    joins = fake_omero.calls("client.joinSession")
    closes = fake_omero.calls("client.closeSession")
    assert len(joins) == 2 and closes == [("client.closeSession", True)] * 2  # detached, then closed
    for client in fake_omero.clients:
        client.killSession.assert_not_called()
    for service in fake_omero.session_services:
        service.closeSession.assert_not_called()
    assert all(c.enableKeepAlive.call_count <= 1 for c in fake_omero.clients)


def test_insecure_data_connection_still_leaves_the_session(fake_omero):
    gw = OmeroPyGateway("omero.example.org", web_url="https://omero.example.org", admin_user="root",
                        admin_password="rootpw", secure=False, client_factory=fake_omero.client_factory)
    key = gw.create_session("alice", 600)
    with gw.session(key) as s:
        assert s.whoami().username == "alice"
    assert gw.keep_alive(key)
    assert all(c[1] for c in fake_omero.calls("client.closeSession")[1:])  # all but the admin's own


def test_whoami(omero_gateway, fake_omero, alice):
    with omero_gateway.session(alice) as s:
        me = s.whoami()
    assert (me.username, me.full_name, me.is_admin) == ("alice", "Alice Liddell", False)
    assert [g.name for g in me.groups] == ["Lab"]  # OMERO's built-in "user" group is not offered
    assert me.default_group_id == lab_id(fake_omero)
    with omero_gateway.session(omero_gateway.create_session("root", 600)) as s:
        assert s.whoami().is_admin


def test_create_session_uses_the_admin_with_the_ttl(omero_gateway, fake_omero):
    omero_gateway.create_session("alice", 90)
    assert fake_omero.calls("session.createSessionWithTimeout") == [
        ("session.createSessionWithTimeout", "alice", 90_000)]
    assert fake_omero.calls("client.closeSession") == [("client.closeSession", False)]  # its own session


def test_close_session_joins_and_kills_only_that_session(omero_gateway, fake_omero, alice):
    made = omero_gateway.create_session("alice", 600)
    fake_omero.log.clear()
    omero_gateway.close_session(made)
    assert fake_omero.calls("client.joinSession") and fake_omero.calls("client.killSession")
    assert fake_omero.store.live_session(made) is None
    assert fake_omero.store.live_session(alice) is not None  # alice's other session is untouched
    fake_omero.log.clear()
    omero_gateway.close_session(made)  # gone already: nothing to kill, no error
    assert not fake_omero.calls("client.killSession")


def test_create_session_needs_a_configured_admin(fake_omero):
    gw = OmeroPyGateway("h", web_url="https://h", client_factory=fake_omero.client_factory)
    assert not gw.can_create_sessions
    with pytest.raises(OmeroError, match="admin"):
        gw.create_session("alice", 60)
    wrong = OmeroPyGateway("h", web_url="https://h", admin_user="root", admin_password="nope",
                           client_factory=fake_omero.client_factory)
    with pytest.raises(OmeroError, match="refused") as error:
        wrong.create_session("alice", 60)
    assert not isinstance(error.value, SessionExpired)


def test_create_session_for_an_unknown_user(omero_gateway):
    with pytest.raises(OmeroError, match="would not open a session for nobody"):
        omero_gateway.create_session("nobody", 60)


def test_an_unreachable_server_is_transient(omero_gateway, fake_omero, alice):
    fake_omero.store.reachable = False
    with pytest.raises(ServerUnreachable) as error:
        with omero_gateway.session(alice):
            pass
    assert error.value.transient


def test_a_session_ended_mid_task_is_expired(omero_gateway, fake_omero, alice):
    with omero_gateway.session(alice) as s:
        fake_omero.store.sessions[alice].alive = False  # e.g. the user signed out of OMERO.web
        with pytest.raises(SessionExpired, match="sign in again"):
            s.whoami()
    assert omero_gateway.keep_alive(alice) is False


def test_a_group_the_user_is_not_in_is_named_in_the_refusal(omero_gateway, fake_omero, alice):
    other = fake_omero.store.add_group("Structural Biology")
    with omero_gateway.session(alice) as s:
        with pytest.raises(PermissionDenied, match=r"'Structural Biology' \(id \d+\)"):
            s.get_or_create_dataset(other, "Krios", "2026-11-21")


def test_an_import_error_is_reported_and_everything_closed(omero_gateway, fake_omero, alice, tmp_path):
    fake_omero.fail_at_step, fake_omero.step_error = 0, "import-unknown-format"
    fake_omero.step_failure = "no reader for grid.xyz"
    path, _ = data_file(tmp_path, 10, "grid.xyz")
    with omero_gateway.session(alice) as s:
        ds = s.get_or_create_dataset(lab_id(fake_omero), "Krios", "2026-11-21").dataset_id
        with pytest.raises(OmeroError, match="does not recognise this file's format .no reader for grid.xyz") as error:
            s.import_image(lab_id(fake_omero), ds, [path], name="grid.xyz", description="",
                           annotations=Annotations(), progress=lambda *a: None)
    assert not error.value.transient and not error.value.retry_helps  # the same file fails the same way
    assert fake_omero.calls("handle.close", "proc.close") == [("handle.close", False), ("proc.close",)]
    assert fake_omero.rows("image") == []


def test_a_corrupted_upload_is_transient(omero_gateway, fake_omero, alice, tmp_path):
    fake_omero.corrupt_uploads = True
    path, _ = data_file(tmp_path, 1000)
    with omero_gateway.session(alice) as s:
        ds = s.get_or_create_dataset(lab_id(fake_omero), "Krios", "2026-11-21").dataset_id
        with pytest.raises(UploadCorrupted) as error:
            s.import_image(lab_id(fake_omero), ds, [path], name="grid", description="",
                           annotations=Annotations(), progress=lambda *a: None)
    assert error.value.transient
    assert fake_omero.calls("proc.close") == [("proc.close",)]


def test_the_fake_lets_concurrent_creates_both_happen(fake_omero):
    """The race below is real: without the adapter's care, eight workers make eight projects."""
    gid = lab_id(fake_omero)
    client = fake_omero.client_factory()
    client.createSession("alice", "secret")
    update = client.getSession().getUpdateService()

    def create():
        p = ProjectI()
        p.setName(rstring("Krios"))
        update.saveAndReturnObject(p, {"omero.group": str(gid)})

    threads = [threading.Thread(target=create) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(fake_omero.rows("project", name="Krios")) == 8


@pytest.mark.parametrize("shared_gateway", [True, False], ids=["one-process", "eight-processes"])
def test_eight_workers_racing_make_one_project_and_one_dataset(fake_omero, shared_gateway):
    fake_omero.store.commit_jitter = 0.02  # transactions overlap, ids commit out of order
    # Every worker's first look finds nothing, so all eight create.
    fake_omero.store.line_up("projects", 8)
    fake_omero.store.line_up("dataset_links", 8)

    def gateway():
        return OmeroPyGateway("h", web_url="https://h", admin_user="root", admin_password="rootpw",
                              client_factory=fake_omero.client_factory, settle_seconds=0.2)

    shared = gateway()
    key = shared.create_session("alice", 600)
    results, errors = [], []

    def work():
        gw = shared if shared_gateway else gateway()
        try:
            with gw.session(key) as s:
                results.append(s.get_or_create_dataset(lab_id(fake_omero), "Krios", "2026-11-21"))
        except Exception as e:  # collected for the assertion below: a thread cannot fail the test
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    [t.start() for t in threads]
    [t.join(timeout=30) for t in threads]
    assert errors == []
    creates = [c for c in fake_omero.calls("update.saveAndReturnObject")]
    assert sum(c[1] == "ProjectI" for c in creates) == 8 and sum(c[1] == "DatasetI" for c in creates) == 8
    (project,) = fake_omero.rows("project", name="Krios")
    (dataset,) = fake_omero.rows("dataset", name="2026-11-21")
    assert fake_omero.rows("pdlink") and all(link.fields["child"] == dataset.id for link in fake_omero.rows("pdlink"))
    assert len(fake_omero.rows("pdlink")) == 1
    assert {(r.project_id, r.dataset_id) for r in results} == {(project.id, dataset.id)}


def test_the_real_ice_client_maps_a_refused_connection():
    """No fake: omero.client itself, pointed at a port nobody listens on."""
    gateway = OmeroPyGateway("127.0.0.1", 1, "https://omero.example.org")
    with pytest.raises(ServerUnreachable) as error:
        with gateway.session("any-key"):
            pass
    assert type(error.value.__cause__).__name__ == "ConnectionRefusedException"
    with pytest.raises(ServerUnreachable):
        gateway.keep_alive("any-key")


def test_a_thumbnail_is_omeros_own_rendering_made_once_the_image_has_settings(imported, omero_gateway, fake_omero, alice):
    refs, *_ = imported
    fake_omero.log.clear()
    with omero_gateway.session(alice) as s:
        jpeg = s.thumbnail(lab_id(fake_omero), refs[0].id, 96)
        again = s.thumbnail(lab_id(fake_omero), refs[0].id, 96)
    assert jpeg[:2] == b"\xff\xd8" and again == jpeg  # a JPEG, as OMERO's ThumbnailStore renders
    calls = [call[0] for call in fake_omero.log if call[0].startswith("thumbs.")]
    assert calls == ["thumbs.setPixelsId", "thumbs.resetDefaults", "thumbs.setPixelsId",  # first: no settings yet
                     "thumbs.getThumbnailByLongestSide", "thumbs.close",
                     "thumbs.setPixelsId", "thumbs.getThumbnailByLongestSide", "thumbs.close"]
    bob = omero_gateway.create_session("bob", 3600)
    with omero_gateway.session(bob) as s, pytest.raises(PermissionDenied):
        s.thumbnail(lab_id(fake_omero), refs[0].id, 96)  # another user's image: not found as theirs
