"""Each server behaviour the strict fake models (see its docstrings for the omero-blitz/omero-server
source of each), and the test that shows the omero-py adapter survives it."""
from __future__ import annotations

import threading

import pytest

from .requirements import require_omero_py

require_omero_py()

import Ice  # noqa: E402
import omero  # noqa: E402

from app.core.omero.base import (  # noqa: E402
    ORIGINAL, ORIGINAL_NAMESPACE, Annotations, FileToAttach, OmeroError, PartOfFileset, ServerUnreachable,
)
from app.core.omero.omeropy import OmeroPyGateway  # noqa: E402
from app.core.omero.omeropy_errors import StorageFull  # noqa: E402
from app.core.omero.omeropy_files import StoreRefused  # noqa: E402
from app.core.omero.omeropy_import import CommandTimedOut  # noqa: E402
from tests.helpers import data_file, wait_until  # noqa: E402
from tests.omero.fake_omero import lab_id  # noqa: E402


def gateway_for(server, **options) -> OmeroPyGateway:
    settings = {"settle_seconds": 0.05, "import_timeout_seconds": 5, "poll_seconds": 0.05, **options}
    return OmeroPyGateway("omero.example.org", 4064, "https://omero.example.org", admin_user="root",
                          admin_password="rootpw", client_factory=server.client_factory, **settings)


def import_one(gateway, key, server, path, *, tags=(), job_uid="job-1", content_sha1="ab" * 20):
    with gateway.session(key) as s:
        gid = lab_id(server)
        ds = s.get_or_create_dataset(gid, "Krios", "2026-11-21").dataset_id
        return s.import_image(gid, ds, [path], name=path.name, description="", progress=lambda *a: None,
                              annotations=Annotations(key_values=[("Sample", "3")], tags=list(tags),
                                                      provenance={"content_sha1": content_sha1, "job_uid": job_uid}))


@pytest.fixture
def alice(omero_gateway):
    return omero_gateway.create_session("alice", 3600)


# -- the import runs on the server, in steps, after verifyUpload returned --------------------------

def test_a_failure_after_the_first_step_leaves_a_partial_image_reported_incomplete(
        omero_gateway, fake_omero, alice, tmp_path):
    fake_omero.fail_at_step = 1  # pixelData: the image, its links and annotations are saved already
    fake_omero.step_error = "import-file-exception"  # Bio-Formats threw an IOException or FormatException
    path, sha1 = data_file(tmp_path, 300)
    with pytest.raises(OmeroError, match="could not import grid.tif: the OMERO server could not read the file: it may "
                                         "be damaged or truncated .Bio-Formats could not read") as error:
        import_one(omero_gateway, alice, fake_omero, path)
    assert not error.value.transient and not error.value.retry_helps
    assert fake_omero.commands[0].response.category == "::omero::grid::ImportRequest"
    (image,) = fake_omero.rows("image")
    assert len(fake_omero.rows("ialink", parent=image.id)) == 2  # key-values and provenance
    # what step 0 wrote: OMEROMetadataStoreClient's placeholder, not a sign of anything
    assert [p.fields["sha1"] for p in fake_omero.rows("pixels", image=image.id)] == ["Pending..."]
    with omero_gateway.session(alice) as s:
        (ref,) = s.find_images(None, "ab" * 20)
    assert (ref.id, ref.job_uid, ref.sha1, ref.complete) == (image.id, "job-1", sha1, False)


def test_a_finished_import_whose_pixels_still_say_pending_is_complete_once_marked(
        omero_gateway, fake_omero, alice, tmp_path):
    """pixelData replaces "Pending..." only when it computes statistics: completion is the portal's mark."""
    fake_omero.min_max_in_file = True
    path, sha1 = data_file(tmp_path, 300)
    (made,) = import_one(omero_gateway, alice, fake_omero, path)
    assert fake_omero.commands[0].response.pixels  # the ImportResponse arrived
    assert [p.fields["sha1"] for p in fake_omero.rows("pixels", image=made.id)] == ["Pending..."]
    with omero_gateway.session(alice) as s:
        before = [r.complete for r in s.find_images(None, sha1)]
        s.mark_complete(lab_id(fake_omero), [made.id])
        after = [(r.id, r.complete) for r in s.find_images(None, sha1)]
    assert not made.complete and before == [False] and after == [(made.id, True)]
    (provenance,) = [m for m in fake_omero.rows("map") if m.fields["ns"] == "upload-portal/provenance"]
    assert [k for k, _ in provenance.fields["pairs"]] == ["content_sha1", "job_uid", "import_completed"]


def test_part_of_a_fileset_is_refused_by_the_server_and_by_the_adapter_before_asking(
        omero_gateway, fake_omero, alice, tmp_path):
    path = tmp_path / "two.ome.tif"
    import numpy as np
    import tifffile

    with tifffile.TiffWriter(path, ome=True) as tif:
        for name in ("a", "b"):
            tif.write(np.zeros((8, 8), np.uint8), metadata={"axes": "YX", "Name": name})
    first, second = import_one(omero_gateway, alice, fake_omero, path)
    assert (first.name, second.name) == ("two.ome.tif [a]", "two.ome.tif [b]")
    with omero_gateway.session(alice) as s:
        with pytest.raises(PartOfFileset, match=f"images {second.id} remain"):
            s.delete_images(lab_id(fake_omero), [first.id])
        assert fake_omero.calls("sf.submit") == []  # the adapter asked nothing it knew would fail
        # the server's own rule (blitz-delete-rules.xml), for a client that asks anyway
        from omero.cmd import Delete2
        from app.core.omero.omeropy_import import wait_for

        handle = s.sf.submit(Delete2(targetObjects={"Image": [first.id]}), s._ctx(lab_id(fake_omero)))
        refused = wait_for(s.client, handle, "deleting", 5, 0.05)
    assert (refused.category, refused.name) == ("::omero::cmd::Delete2", "graph-fail")
    assert f"may not delete Image:{first.id} while Image:{second.id} remains" in refused.parameters["message"]
    assert len(fake_omero.rows("image")) == 2


def test_delete_images_removes_what_the_import_made_but_not_a_shared_tag(omero_gateway, fake_omero, alice, tmp_path):
    first, _ = data_file(tmp_path, 100, "a.tif")
    second, _ = data_file(tmp_path, 101, "b.tif")
    (kept,) = import_one(omero_gateway, alice, fake_omero, first, tags=["shared"], job_uid="job-a",
                         content_sha1="aa" * 20)
    (gone,) = import_one(omero_gateway, alice, fake_omero, second, tags=["shared", "only-b"], job_uid="job-b",
                         content_sha1="bb" * 20)
    before = {kind: len(fake_omero.rows(kind)) for kind in ("fileset", "file", "pixels", "map", "tag")}
    with omero_gateway.session(alice) as s:
        s.delete_images(lab_id(fake_omero), [gone.id])
        assert s.find_images(None, "bb" * 20) == [] and [r.id for r in s.find_images(None, "aa" * 20)] == [kept.id]
    after = {kind: len(fake_omero.rows(kind)) for kind in ("fileset", "file", "pixels", "map", "tag")}
    assert {k: before[k] - after[k] for k in before} == {"fileset": 1, "file": 1, "pixels": 1, "map": 2, "tag": 1}
    assert [t.fields["text"] for t in fake_omero.rows("tag")] == ["shared"]
    assert not fake_omero.rows("ialink", parent=gone.id) and not fake_omero.rows("dilink", child=gone.id)
    assert fake_omero.calls("sf.submit") == [("sf.submit", "Delete2", [gone.id])]


def test_the_fake_refuses_deleting_a_linked_image_with_deleteObject(fake_omero, omero_gateway, alice, tmp_path):
    """Why delete_images uses Delete2: deleteObject does not cascade."""
    from omero.model import ImageI

    path, _ = data_file(tmp_path, 50)
    (image,) = import_one(omero_gateway, alice, fake_omero, path)
    with omero_gateway.session(alice) as s:
        with pytest.raises(omero.ValidationException, match="still linked"):
            s._update.deleteObject(ImageI(image.id, False), {"omero.group": str(lab_id(fake_omero))})


# -- the handle and its callback ------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["lost", "late"])
def test_a_lost_or_late_callback_does_not_block_the_import(fake_omero, tmp_path, mode):
    # late: after an hour, long past our wait (20 s): an answer at all was found by polling the handle
    fake_omero.callbacks, fake_omero.late_seconds = mode, 3600
    gateway = gateway_for(fake_omero, import_timeout_seconds=20, poll_seconds=0.05)
    path, sha1 = data_file(tmp_path, 80)
    (ref,) = import_one(gateway, gateway.create_session("alice", 600), fake_omero, path)
    assert ref.sha1 == sha1 and fake_omero.commands[0].response.pixels


def test_an_import_that_outlasts_our_wait_is_cancelled_and_transient(fake_omero, tmp_path):
    gate = fake_omero.step_gates[1] = threading.Event()  # the server stays in pixelData
    gateway = gateway_for(fake_omero, import_timeout_seconds=0.3)
    key = gateway.create_session("alice", 600)
    path, _ = data_file(tmp_path, 80)
    with pytest.raises(CommandTimedOut, match="did not finish importing grid.tif") as error:
        import_one(gateway, key, fake_omero, path)
    gate.set()
    assert error.value.transient
    assert fake_omero.calls("handle.close", "command.end") == [("handle.close", True), ("command.end", "ERR")]
    assert fake_omero.commands[0].response.name == "cancel-called"  # closing the handle cancelled it
    with gateway.session(key) as s:
        (ref,) = s.find_images(None, "ab" * 20)
    assert not ref.complete  # a rerun removes it (see test_pipeline_omeropy)


def test_uploaders_must_be_closed_before_verify_upload(fake_omero, tmp_path):
    """The rule the adapter's upload() keeps (it closes each uploader in finally)."""
    from omero.model import DatasetI
    from omero.rtypes import rstring

    from app.core.omero.omeropy_import import build_fileset, build_settings

    client = fake_omero.client_factory()
    client.createSession("alice", "secret")
    ctx = {"omero.group": str(lab_id(fake_omero))}
    dataset = DatasetI()
    dataset.setName(rstring("D"))
    dataset_id = client.getSession().getUpdateService().saveAndReturnObject(dataset, ctx).getId().getValue()
    path, sha1 = data_file(tmp_path, 10)
    proc = client.getManagedRepository().importFileset(
        build_fileset([path]), build_settings(dataset_id, "x", "", []), ctx)
    proc.getUploader(0).write(path.read_bytes(), 0, 10)  # never closed: the server has no hash yet
    with pytest.raises(omero.ChecksumValidationException):
        proc.verifyUpload([sha1])


# -- the server's exceptions ----------------------------------------------------------------------

def test_a_full_repository_is_transient_and_says_so(omero_gateway, fake_omero, alice, tmp_path):
    fake_omero.repository_free = 1000
    path, _ = data_file(tmp_path, 5000)
    with pytest.raises(StorageFull, match="OMERO's storage is full or unavailable right now \\(No space left") as error:
        import_one(omero_gateway, alice, fake_omero, path)
    assert error.value.transient
    assert fake_omero.calls("uploader.close", "proc.close") == [("uploader.close", 0), ("proc.close",)]
    assert fake_omero.rows("image") == []


def test_import_as_an_unknown_user_says_there_is_no_such_user(omero_gateway):
    # the server answers AuthenticationException "Error creating session." (SessionBean wraps its
    # "Can't find default group"): at sudo that means no such user, not a wrong password
    with pytest.raises(OmeroError, match="OMERO has no active user of that name .Error creating session") as error:
        omero_gateway.create_session("nobody", 60)
    assert "expired" not in str(error.value) and not error.value.transient


def test_a_group_owner_may_import_as_members_of_the_groups_it_leads_only(fake_omero):
    lab = lab_id(fake_omero)
    fake_omero.store.users["bob"].leads = [lab]
    other = fake_omero.store.add_group("Structural Biology")
    fake_omero.store.add_user("carol", [other])
    owner = OmeroPyGateway("omero.example.org", 4064, admin_user="bob", admin_password="secret",
                           client_factory=fake_omero.client_factory)
    with owner.session(owner.create_session("alice", 60)) as s:
        assert s.whoami().username == "alice"
    with pytest.raises(OmeroError, match="may not open sessions for carol .Group sudo is not permitted for group "
                                         "Structural Biology.*owner of carol's default group"):
        owner.create_session("carol", 60)


@pytest.mark.parametrize("call", ["client.createSession", "client.joinSession"])
def test_a_server_still_starting_is_transient(omero_gateway, fake_omero, alice, call):
    """omero-py retries a server not fully initialized, then raises ClientError: try again later."""
    fake_omero.fail(call, omero.ClientError("Obtained null object prox"))
    with pytest.raises(ServerUnreachable, match="did not open a session") as error:
        if call == "client.createSession":
            omero_gateway.create_session("alice", 60)
        else:
            with omero_gateway.session(alice):
                pass
    assert error.value.transient


def test_an_original_that_could_not_be_stored_leaves_no_file_behind(omero_gateway, fake_omero, alice, tmp_path):
    """RawFileBean refuses a write on a full disk after the OriginalFile row was saved: it is deleted,
    so each retry on a full disk leaves nothing behind."""
    (image,) = import_one(omero_gateway, alice, fake_omero, data_file(tmp_path, 80)[0])
    files_before = {r.id for r in fake_omero.rows("file")}
    original, _ = data_file(tmp_path, 3000, "a.emi")
    fake_omero.files.full = True
    with omero_gateway.session(alice) as s:
        for _ in range(2):
            with pytest.raises(StoreRefused, match="repository may be full") as error:
                s.attach_files(lab_id(fake_omero), [image.id], [FileToAttach(original, "a.emi", ORIGINAL)],
                               ORIGINAL_NAMESPACE, lambda *a: None)
            assert error.value.transient
    assert {r.id for r in fake_omero.rows("file")} == files_before


def test_an_empty_original_is_stored_with_its_hash(omero_gateway, fake_omero, alice, tmp_path):
    """RawFileBean.save hashes only a store that was written to: an empty file is written once."""
    (image,) = import_one(omero_gateway, alice, fake_omero, data_file(tmp_path, 80)[0])
    empty = tmp_path / "notes.txt"
    empty.write_bytes(b"")
    with omero_gateway.session(alice) as s:
        (stored,) = s.attach_files(lab_id(fake_omero), [image.id], [FileToAttach(empty, "notes.txt", ORIGINAL)],
                                   ORIGINAL_NAMESPACE, lambda *a: None)
        listed = [f for f in s.stored_files(lab_id(fake_omero), image.id) if f.kind == ORIGINAL]
    assert (stored.size, stored.sha1) == (0, "da39a3ee5e6b4b0d3255bfef95601890afd80709")  # SHA-1 of no bytes
    assert listed == [stored]


def test_an_admin_without_sudo_is_told_what_it_lacks(omero_gateway, fake_omero):
    fake_omero.store.users["root"].sudo = False  # a light admin without the Sudo privilege
    with pytest.raises(OmeroError, match="may not open sessions for alice .*give it the Sudo privilege"):
        omero_gateway.create_session("alice", 60)


def test_a_dropped_connection_cancels_the_import_and_leaves_a_partial_image(omero_gateway, fake_omero, alice, tmp_path):
    """The handle cannot be closed over a dropped connection, but the connection's end closes it on the
    server (SessionI.cleanServants): the import is cancelled after step 0, its image left unmarked."""
    fake_omero.callbacks = "lost"
    fake_omero.step_gates[1] = threading.Event()  # held in pixelData until the end: never set
    fake_omero.fail("handle.getResponse", Ice.ConnectionLostException())
    fake_omero.fail("handle.close", Ice.ConnectionLostException())  # the close cannot reach the server either
    path, _ = data_file(tmp_path, 80)
    with pytest.raises(ServerUnreachable):
        import_one(omero_gateway, alice, fake_omero, path)
    assert fake_omero.commands[0].response.name == "cancel-called"
    with omero_gateway.session(alice) as s:
        (ref,) = s.find_images(None, "ab" * 20)
    assert not ref.complete  # a rerun removes it and imports again (test_pipeline_omeropy)


# -- sessions -------------------------------------------------------------------------------------

def test_a_web_session_idles_out_unless_kept_alive(omero_gateway, fake_omero):
    idle, kept = fake_omero.web_session("alice"), fake_omero.web_session("alice")
    for _ in range(4):  # 20 minutes, the portal's keep-alive every 5
        fake_omero.store.advance(300)
        assert omero_gateway.keep_alive(kept)
    assert omero_gateway.keep_alive(idle) is False
    with omero_gateway.session(kept) as s:
        assert s.whoami().username == "alice"


def test_a_session_stays_alive_through_a_long_import(omero_gateway, fake_omero, tmp_path):
    key = fake_omero.web_session("alice")
    gate = fake_omero.step_gates[1] = threading.Event()
    path, _ = data_file(tmp_path, 80)
    refs = []
    worker = threading.Thread(target=lambda: refs.extend(import_one(omero_gateway, key, fake_omero, path)))
    worker.start()
    wait_until(lambda: fake_omero.commands, timeout=10, what="the import to start on the server")
    fake_omero.store.advance(3600)  # an hour in pixelData; the adapter's client keeps the session alive
    gate.set()
    worker.join(timeout=30)
    assert len(refs) == 1 and fake_omero.commands[0].response.pixels and omero_gateway.keep_alive(key)


def test_concurrent_jobs_creating_the_same_new_tag_end_with_one_tag(fake_omero, tmp_path):
    fake_omero.store.line_up("tags", 4)  # every job's first look finds no tag, so all four create one
    gateway = gateway_for(fake_omero, settle_seconds=0.2)
    key = gateway.create_session("alice", 600)
    errors = []

    def job(n):
        path, _ = data_file(tmp_path, 60 + n, f"f{n}.tif")
        try:
            import_one(gateway, key, fake_omero, path, tags=["Grid 7"], job_uid=f"job-{n}", content_sha1=f"{n:040x}")
        except Exception as e:  # collected for the assertion: a thread cannot fail the test
            errors.append(e)

    threads = [threading.Thread(target=job, args=(n,)) for n in range(4)]
    [t.start() for t in threads]
    [t.join(timeout=30) for t in threads]
    assert errors == []
    assert sum(c[1] == "TagAnnotationI" for c in fake_omero.calls("update.saveAndReturnObject")) == 4
    (tag,) = fake_omero.rows("tag", text="Grid 7")
    assert sorted(link.fields["parent"] for link in fake_omero.rows("ialink", child=tag.id)) == \
        sorted(i.id for i in fake_omero.rows("image"))
