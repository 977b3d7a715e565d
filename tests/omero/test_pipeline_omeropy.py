"""The backbone's pipeline with the omero-py adapter on the strict fake: sign in with an OMERO session
key, upload, import, duplicate by content; and the key never reaches the browser."""
import re

import pytest

from app.core.models import Job
from tests.helpers import SAMPLES, ome_tiff, sign_in_with_key, wait_until
from workers import pipeline


def test_a_session_key_signs_in_with_the_users_groups_and_stays_on_the_server(portal_app, alice):
    assert alice.me["username"] == "alice" and [g["name"] for g in alice.me["groups"]] == ["Lab"]
    cookies = " ".join(c.value for c in alice.client._cookies.values())
    assert alice.key not in cookies and alice.key not in alice.client.get("/").get_data(as_text=True)


@pytest.mark.parametrize("key, message", [("not-a-session", "That is not an OMERO session key"),
                                          ("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "has expired or was closed")])
def test_a_malformed_or_expired_key_is_refused_with_its_reason(portal_app, key, message):
    client, response = sign_in_with_key(portal_app, key)
    assert response.status_code == 400 and message in response.get_data(as_text=True)
    assert client.get("/api/me").status_code == 401


def test_a_key_that_expired_after_it_was_issued_is_refused_as_expired(portal_app, omero_gateway, fake_omero):
    key = omero_gateway.create_session("alice", 600)
    fake_omero.store.live_session(key).alive = False
    _client, response = sign_in_with_key(portal_app, key)
    assert response.status_code == 400 and "has expired or was closed" in response.get_data(as_text=True)


@pytest.mark.parametrize("key", ["", "x" * 5000, "abc def ghi", "key\x00with\x07controls", "schlüssel-1234"])
def test_a_malformed_key_is_refused_as_malformed_without_asking_omero(portal_app, fake_omero, key):
    joins = len([c for c in fake_omero.log if c == ("client.joinSession",)])
    client, response = sign_in_with_key(portal_app, key)
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and "is not an OMERO session key" in page and "expired" not in page
    assert len([c for c in fake_omero.log if c == ("client.joinSession",)]) == joins
    assert client.get("/api/me").status_code == 401


def test_an_upload_imports_through_the_adapter_and_a_second_copy_is_a_duplicate(portal_app, alice, fake_omero):
    data = ome_tiff(seed=21, microscope="Talos L120C", acquired="2024-03-05T10:00:00+00:00")
    first = alice.send({"a.ome.tif": data}, key_values=[["Sample", "Grid 4"]])
    with portal_app.app_context():
        assert pipeline.run_job(portal_app.extensions["services"], first["jobs"][0]["id"], "w1") == "imported"
    (project,) = fake_omero.rows("project", name="Talos L120C")
    (dataset,) = fake_omero.rows("dataset", name="2024-03-05")
    (image,) = fake_omero.rows("image")
    with portal_app.extensions["services"].db.session() as db:
        job = db.get(Job, first["jobs"][0]["id"])
        assert job.image_ids == [image.id] and job.link == f"https://omero.example.org/webclient/?show=image-{image.id}"
    assert fake_omero.rows("tag", text="Grid 4")

    again = alice.send({"copy.ome.tif": data})
    with portal_app.app_context():
        assert pipeline.run_job(portal_app.extensions["services"], again["jobs"][0]["id"], "w1") == "duplicate"
    assert len(fake_omero.rows("image")) == 1


def test_an_expired_session_fails_the_job_with_the_sign_in_message(portal_app, alice, fake_omero):
    batch = alice.send({"a.ome.tif": ome_tiff(seed=22)})
    fake_omero.store.live_session(alice.key).alive = False
    with portal_app.app_context():
        assert pipeline.run_job(portal_app.extensions["services"], batch["jobs"][0]["id"], "w1") == "failed"
    with portal_app.extensions["services"].db.session() as db:
        assert db.get(Job, batch["jobs"][0]["id"]).message == \
            "Your OMERO session has expired: sign in again, then retry"


def test_a_key_that_expires_while_a_job_waits_fails_it_keeps_the_bytes_and_a_retry_imports(
        portal_app, alice, omero_gateway, fake_omero):
    batch = alice.send({"a.ome.tif": ome_tiff(seed=23)})
    job_id = batch["jobs"][0]["id"]
    fake_omero.store.live_session(alice.key).alive = False  # OMERO.web's session idled out
    with portal_app.app_context():
        assert pipeline.run_job(portal_app.extensions["services"], job_id, "w1") == "failed"
    failed = alice.get(f"/api/batches/{batch['id']}").get_json()["jobs"][0]
    assert failed["state"] == "failed" and "sign in again" in failed["message"]
    assert failed["files"][0]["received"] == failed["files"][0]["size"]  # the bytes wait on the server

    fresh = omero_gateway.create_session("alice", 600)  # a new key from OMERO.web's token page
    token = re.search(r'name="csrf_token" value="([^"]+)"',
                      alice.client.get("/login").get_data(as_text=True)).group(1)
    assert alice.client.post("/login", data={"omero_key": fresh, "csrf_token": token}).status_code == 302
    headers = {"X-CSRFToken": alice.client.get("/api/me").get_json()["csrf_token"]}
    retried = alice.client.post(f"/api/jobs/{job_id}/retry", headers=headers)
    assert retried.status_code == 200 and retried.get_json()["state"] == "queued"
    with portal_app.app_context():
        assert pipeline.run_job(portal_app.extensions["services"], job_id, "w1") == "imported"
    (image,) = fake_omero.rows("image")
    with portal_app.extensions["services"].db.session() as db:
        assert db.get(Job, job_id).image_ids == [image.id]


def test_a_rerun_after_a_half_import_removes_it_and_imports_again(portal_app, alice, fake_omero):
    batch = alice.send({"a.ome.tif": ome_tiff(seed=24)})
    job_id = batch["jobs"][0]["id"]
    fake_omero.fail_at_step = 1  # the server saved the image and its annotations, then failed
    with portal_app.app_context():
        assert pipeline.run_job(portal_app.extensions["services"], job_id, "w1") == "failed"
    (partial,) = fake_omero.rows("image")
    # the watch folder's check before deleting a local copy: a half import is no copy
    assert alice.client.get(f"/api/jobs/{job_id}/confirm").get_json()["in_omero"] is False
    fake_omero.fail_at_step = None
    headers = {"X-CSRFToken": alice.client.get("/api/me").get_json()["csrf_token"]}
    assert alice.client.post(f"/api/jobs/{job_id}/retry", headers=headers).status_code == 200
    with portal_app.app_context():
        assert pipeline.run_job(portal_app.extensions["services"], job_id, "w1") == "imported"
    (image,) = fake_omero.rows("image")
    assert alice.client.get(f"/api/jobs/{job_id}/confirm").get_json()["in_omero"] is True
    assert image.id != partial.id and not fake_omero.rows("ialink", parent=partial.id)
    assert [c[2] for c in fake_omero.calls("sf.submit")] == [[partial.id]]
    with portal_app.extensions["services"].db.session() as db:
        assert db.get(Job, job_id).image_ids == [image.id]


def test_a_network_blip_then_a_rerun_ends_with_one_image(portal_app, alice, fake_omero):
    import threading

    import Ice

    batch = alice.send({"a.ome.tif": ome_tiff(seed=25)})
    job_id = batch["jobs"][0]["id"]
    # The first attempt loses the server while it waits; its handle cannot be closed, and the end of its
    # connection cancels it (or, where the server's cancel times out, it goes on: HandleI "Cancel
    # failed"). It is held before saving anything until the rerun's import runs too.
    gate = fake_omero.step_gates[0] = threading.Event()
    fake_omero.callbacks = "lost"
    fake_omero.fail("handle.getResponse", Ice.ConnectionLostException())
    fake_omero.fail("handle.close", Ice.ConnectionLostException())
    with portal_app.app_context():
        assert isinstance(pipeline.run_job(portal_app.extensions["services"], job_id, "w1"), pipeline.RetryLater)
        assert fake_omero.rows("image") == []  # so the rerun finds nothing and imports again
        # both imports go on once the rerun's has started on the server
        threading.Thread(target=lambda: (wait_until(lambda: len(fake_omero.commands) == 2, timeout=20), gate.set()),
                         daemon=True).start()
        assert pipeline.run_job(portal_app.extensions["services"], job_id, "w1") == "imported"
    assert [c.done.is_set() for c in fake_omero.commands[:2]] == [True, True]
    (image,) = fake_omero.rows("image")
    with portal_app.extensions["services"].db.session() as db:
        assert db.get(Job, job_id).image_ids == [image.id]


def test_a_pasted_key_is_kept_alive_from_the_first_byte_until_the_job_ends(portal_app, fake_omero):
    import hashlib

    from workers import recovery

    key = fake_omero.web_session("alice")  # from OMERO.web's token page: idles out after 10 minutes
    client, _ = sign_in_with_key(portal_app, key)
    headers = {"X-CSRFToken": client.get("/api/me").get_json()["csrf_token"]}
    data = ome_tiff(seed=26)
    group = client.get("/api/me").get_json()["groups"][0]["id"]
    batch = client.post("/api/batches", headers=headers,
                        json={"group_id": group, "files": [{"name": "a.ome.tif", "size": len(data)}]}).get_json()
    (f,) = batch["jobs"][0]["files"]
    with portal_app.app_context():
        recovery.keep_sessions_alive(portal_app.extensions["services"])
        assert not [c for c in fake_omero.log if c == ("sf.keepAlive",)]  # no byte yet: nothing to keep
        assert client.put(f"/api/files/{f['id']}?offset=0", headers=headers, data=data[:100]).status_code == 200
        for _ in range(6):  # half an hour of a slow upload, the worker's sweep every 5 minutes
            fake_omero.store.advance(300)
            recovery.keep_sessions_alive(portal_app.extensions["services"])
        client.put(f"/api/files/{f['id']}?offset=100", headers=headers, data=data[100:])
        client.post(f"/api/files/{f['id']}/complete", headers=headers, json={"sha1": hashlib.sha1(data).hexdigest()})
        fake_omero.store.advance(300)
        recovery.keep_sessions_alive(portal_app.extensions["services"])  # queued, waiting for a worker
        fake_omero.store.advance(300)
        assert pipeline.run_job(portal_app.extensions["services"], batch["jobs"][0]["id"], "w1") == "imported"
    assert len(fake_omero.rows("image")) == 1


def test_a_finished_import_the_worker_did_not_mark_is_removed_and_made_again(portal_app, alice, fake_omero,
                                                                             monkeypatch):
    """The server finished (its pixels still say "Pending...", as when the file carries min/max), but
    the worker stopped before its checks marked the import: the rerun cannot tell it from a cut-short
    one, so it removes it whole and imports again."""
    from app.core.omero.base import ServerUnreachable
    from app.core.omero.omeropy import OmeroPySession

    fake_omero.min_max_in_file = True
    job_id = alice.send({"a.ome.tif": ome_tiff(seed=28)})["jobs"][0]["id"]
    real = OmeroPySession.mark_complete
    monkeypatch.setattr(OmeroPySession, "mark_complete", lambda *a: (_ for _ in ()).throw(ServerUnreachable()))
    with portal_app.app_context():
        assert isinstance(pipeline.run_job(portal_app.extensions["services"], job_id, "w1"), pipeline.RetryLater)
    (unmarked,) = fake_omero.rows("image")
    assert [p.fields["sha1"] for p in fake_omero.rows("pixels")] == ["Pending..."]
    assert alice.client.get(f"/api/jobs/{job_id}/confirm").get_json()["in_omero"] is False
    monkeypatch.setattr(OmeroPySession, "mark_complete", real)
    with portal_app.app_context():
        assert pipeline.run_job(portal_app.extensions["services"], job_id, "w1") == "imported"
    (image,) = fake_omero.rows("image")
    assert image.id != unmarked.id and alice.client.get(f"/api/jobs/{job_id}/confirm").get_json()["in_omero"] is True


def test_a_czi_of_three_scenes_is_one_job_with_its_three_images(portal_app, alice, fake_omero):
    """Bio-Formats makes an image of each scene, all in one fileset: the job keeps and lists them all,
    and a second copy is a duplicate of all three."""
    name = "S3_1Pos_2Mosaic_T1_Z1_CH1.czi"
    data = (SAMPLES / name).read_bytes()
    job_id = alice.send({name: data})["jobs"][0]["id"]
    with portal_app.app_context():
        assert pipeline.run_job(portal_app.extensions["services"], job_id, "w1") == "imported"
    images = sorted(fake_omero.rows("image"), key=lambda r: r.id)
    assert [i.fields["name"] for i in images] == [f"{name} [TR1]", f"{name} [P1]", f"{name} [TR2]"]
    assert len({i.fields["fileset"] for i in images}) == 1
    record = alice.client.get(f"/api/jobs/{job_id}").get_json()
    assert record["image_ids"] == [i.id for i in images] and record["summary"].startswith("3 images")
    assert [i["name"] for i in record["images"]] == [i.fields["name"] for i in images]
    confirmed = alice.client.get(f"/api/jobs/{job_id}/confirm").get_json()
    assert confirmed["in_omero"] is True and [i["id"] for i in confirmed["images"]] == [i.id for i in images]
    again = alice.send({"copy.czi": data})["jobs"][0]["id"]
    with portal_app.app_context():
        assert pipeline.run_job(portal_app.extensions["services"], again, "w1") == "duplicate"
    assert alice.client.get(f"/api/jobs/{again}").get_json()["image_ids"] == [i.id for i in images]
    assert len(fake_omero.rows("image")) == 3


def half_import(portal_app, alice, fake_omero, data: bytes) -> int:
    """A job whose import the server failed after saving its image (step 1): a partial image stays."""
    job_id = alice.send({"a.ome.tif": data})["jobs"][0]["id"]
    fake_omero.fail_at_step = 1
    with portal_app.app_context():
        assert pipeline.run_job(portal_app.extensions["services"], job_id, "w1") == "failed"
    fake_omero.fail_at_step = None
    return job_id


def test_the_duplicate_check_before_sending_ignores_a_half_import(portal_app, alice, fake_omero):
    import hashlib

    data = ome_tiff(seed=29)
    half_import(portal_app, alice, fake_omero, data)
    batch = alice.new_batch({"copy.ome.tif": data})
    job = batch["jobs"][0]
    checked = alice.post(f"/api/jobs/{job['id']}/check", json={"files": [
        {"id": job["files"][0]["id"], "sha1": hashlib.sha1(data).hexdigest()}]}).get_json()
    assert checked["checked"] is True and checked["job"]["state"] == "uploading"  # sent, not a duplicate


@pytest.mark.parametrize("step, error, says", [
    (0, "import-unknown-format", "does not recognise this file's format (Unknown format)"),
    # after step 0 saved the image: removed at once, no rerun would come for it
    (1, "import-file-exception", "could not read the file: it may be damaged or truncated (Unknown format)"),
])
def test_an_import_omero_cannot_read_says_so_offers_no_retry_and_leaves_nothing(portal_app, alice, fake_omero,
                                                                                 step, error, says):
    fake_omero.fail_at_step, fake_omero.step_error, fake_omero.step_failure = step, error, "Unknown format"
    job_id = alice.send({"a.ome.tif": ome_tiff(seed=30)})["jobs"][0]["id"]
    with portal_app.app_context():
        assert pipeline.run_job(portal_app.extensions["services"], job_id, "w1") == "failed"
    job = alice.client.get(f"/api/jobs/{job_id}").get_json()
    assert says in job["message"] and job["can_retry"] is False
    for kind in ("image", "pixels", "fileset", "file", "map", "ialink"):  # no image, no orphaned OriginalFile
        assert fake_omero.rows(kind) == [], kind


def test_another_jobs_half_import_does_not_make_a_duplicate(portal_app, alice, fake_omero):
    data = ome_tiff(seed=27)
    half_import(portal_app, alice, fake_omero, data)
    second = alice.send({"copy.ome.tif": data})["jobs"][0]["id"]
    with portal_app.app_context():
        assert pipeline.run_job(portal_app.extensions["services"], second, "w1") == "imported"
    assert len(fake_omero.rows("image")) == 2  # the first job's partial image is the first job's to remove
