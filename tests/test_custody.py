"""Originals kept in OMERO, the job's record of what OMERO holds, and confirm by the original bytes
(issue 12), on the embedded store with real sample files; the omero-py adapter's side is in
tests/omero/test_custody_omeropy.py."""
from __future__ import annotations

import hashlib
import sqlite3

import pytest

import converters
from app.core.omero.base import OmeroError
from tests.helpers import SAMPLES, Portal, close_app, make_app, ome_tiff, with_more
from workers import pipeline

TIA = ["128x128_TEM_acquire-sum1.emi", "128x128_TEM_acquire-sum1_1.ser"]


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@pytest.fixture
def alice(embedded_app):
    return Portal(embedded_app.test_client(), "alice")


def send_samples(portal: Portal, names: list[str]) -> dict:
    return portal.send({name: (SAMPLES / name).read_bytes() for name in names})["jobs"][0]


def run(app, job_id: int):
    with app.app_context():
        return pipeline.run_job(app.extensions["services"], job_id, "w1")


def record(portal: Portal, job_id: int) -> dict:
    response = portal.get(f"/api/jobs/{job_id}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_a_converted_tia_pair_keeps_both_originals_byte_for_byte(embedded_app, alice):
    job = send_samples(alice, TIA)
    assert run(embedded_app, job["id"]) == "imported"
    got = record(alice, job["id"])
    assert [o["name"] for o in got["originals"]] == TIA
    for original in got["originals"]:
        local = (SAMPLES / original["name"]).read_bytes()
        assert (original["sha1"], original["size"]) == (sha1(local), len(local))
        download = alice.get(original["url"])
        assert download.status_code == 200 and download.data == local
        assert original["name"] in download.headers["Content-Disposition"]
    (image,) = got["images"]
    assert image["name"] == TIA[0] and image["omero_url"] == f"/store/image/{image['id']}"
    converted = alice.get(image["url"])
    assert converted.status_code == 200 and converted.data.startswith(b"II")  # the OME-TIFF OMERO imported
    assert got["summary"] == "1 image, originals kept"
    confirmed = alice.get(f"/api/jobs/{job['id']}/confirm").get_json()
    assert confirmed["in_omero"] is True and confirmed["missing"] == []
    assert "original files (the EMI and all its SERs" in alice.get("/help").get_data(as_text=True)
    # the embedded store lists and serves them too
    (stored,) = embedded_app.extensions["services"].omero.images_of("alice")
    kept = [f for f in stored["files"] if f.kind == "original"]
    assert sorted(f.name for f in kept) == sorted(TIA)
    with alice.get(f"/store/file/{kept[0].id}") as served:
        assert served.data == (SAMPLES / kept[0].name).read_bytes()


def test_confirm_is_false_while_an_original_is_missing_from_omero(embedded_app, alice):
    job = send_samples(alice, TIA)
    run(embedded_app, job["id"])
    ser = next(o for o in record(alice, job["id"])["originals"] if o["name"] == TIA[1])
    # Someone removes the .ser's attachment in OMERO: the image is still there, the original is not.
    with sqlite3.connect(embedded_app.config["EMBEDDED_STORE_DIR"] / "store.sqlite") as db:
        db.execute("DELETE FROM image_files WHERE file_id = ?", (int(ser["url"].rsplit("/", 1)[1]),))
    confirmed = alice.get(f"/api/jobs/{job['id']}/confirm").get_json()
    assert confirmed["in_omero"] is False and confirmed["missing"] == [TIA[1]]
    assert TIA[1] in confirmed["reason"] and confirmed["images"]


def test_a_passthrough_file_is_its_own_original(embedded_app, alice):
    data = ome_tiff(seed=41, microscope="Krios", acquired="2024-01-02T03:04:05+00:00")
    job = alice.send({"a.ome.tif": data})["jobs"][0]
    run(embedded_app, job["id"])
    got = record(alice, job["id"])
    assert [(o["name"], o["sha1"]) for o in got["originals"]] == [("a.ome.tif", sha1(data))]
    assert alice.get(got["originals"][0]["url"]).data == data
    (stored,) = embedded_app.extensions["services"].omero.images_of("alice")
    assert [f.kind for f in stored["files"]] == ["fileset"]  # nothing stored twice
    assert alice.get(f"/api/jobs/{job['id']}/confirm").get_json()["in_omero"] is True


def test_with_originals_off_a_converted_job_is_never_confirmed(embedded_stack, monkeypatch):
    app = make_app(embedded_stack | {"PORTAL_KEEP_ORIGINALS": "false"}, monkeypatch)
    try:
        alice = Portal(app.test_client(), "alice")
        job = send_samples(alice, TIA)
        assert run(app, job["id"]) == "imported"
        got = record(alice, job["id"])
        assert got["originals"] == [] and got["summary"] == "1 image, originals not kept"
        confirmed = alice.get(f"/api/jobs/{job['id']}/confirm").get_json()
        assert confirmed["in_omero"] is False and "PORTAL_KEEP_ORIGINALS is off" in confirmed["reason"]
        assert "does not keep the original files in OMERO" in alice.get("/help").get_data(as_text=True)
    finally:
        close_app(app)


def test_every_image_and_attachment_of_a_conversion_lands_and_is_listed(embedded_app, alice, monkeypatch):
    real = converters.convert
    monkeypatch.setattr(converters, "convert", lambda files, out, options: with_more(real(files, out, options), out))
    job = send_samples(alice, TIA)
    assert run(embedded_app, job["id"]) == "imported"
    got = record(alice, job["id"])
    assert [i["name"] for i in got["images"]] == [TIA[0], f"{TIA[0]} [HAADF]"]
    assert got["summary"] == "2 images, 1 spectrum attached, originals kept"
    assert [(a["name"], a["kind"], a["title"]) for a in got["attachments"]] == [
        ("EDS.csv", "spectrum-csv", "EDS spectrum"), ("EDS.png", "spectrum-plot", "EDS spectrum")]
    assert alice.get(got["attachments"][0]["url"]).data.startswith(b"energy (keV),counts")
    assert "pixel size unknown for HAADF" in got["warnings"]
    stored = embedded_app.extensions["services"].omero.images_of("alice")
    assert {(i["project"], i["dataset"]) for i in stored} == {(got["project"], got["dataset"])}
    for image in stored:  # each image annotated like the first, the originals and spectra linked to each
        assert image["annotations"]["maps"]["upload-portal/provenance"]["source_files"] == "; ".join(TIA)
        assert sorted(f.name for f in image["files"] if f.kind != "fileset") == sorted(TIA + ["EDS.csv", "EDS.png"])


def test_originals_that_cannot_be_stored_retry_and_a_rerun_imports_nothing_twice(embedded_app, alice, monkeypatch):
    from app.core.omero.embedded import EmbeddedSession

    class Full(OmeroError):
        transient = True

    real = EmbeddedSession.attach_files
    monkeypatch.setattr(EmbeddedSession, "attach_files", lambda *a, **k: (_ for _ in ()).throw(Full("repository full")))
    job = send_samples(alice, TIA)
    assert isinstance(run(embedded_app, job["id"]), pipeline.RetryLater)
    got = record(alice, job["id"])
    assert got["state"] != "imported" and "repository full" in got["message"]
    assert (SAMPLES / TIA[0]).read_bytes() == (embedded_app.extensions["services"].staging.path(job["id"], TIA[0])).read_bytes()
    monkeypatch.setattr(EmbeddedSession, "attach_files", real)
    assert run(embedded_app, job["id"]) == "imported"
    assert len(embedded_app.extensions["services"].omero.images_of("alice")) == 1
    assert len(record(alice, job["id"])["originals"]) == 2


def test_the_job_record_is_the_owners_and_staffs_only(embedded_stack, monkeypatch):
    app = make_app(embedded_stack | {"PORTAL_STAFF_USERS": "sam"}, monkeypatch)
    try:
        alice = Portal(app.test_client(), "alice")
        job = send_samples(alice, TIA)
        run(app, job["id"])
        got = record(alice, job["id"])
        bob, sam = Portal(app.test_client(), "bob"), Portal(app.test_client(), "sam")
        assert bob.get(f"/api/jobs/{job['id']}").status_code == 404
        assert sam.get(f"/api/jobs/{job['id']}").get_json()["originals"] == got["originals"]
        for url in [got["originals"][0]["url"], got["images"][0]["url"]]:
            assert bob.get(url).status_code == 404
        # a file id that is not this job's answers 404, even the owner's own from another job
        other = alice.send({"b.ome.tif": ome_tiff(seed=43)})["jobs"][0]
        run(app, other["id"])
        foreign = record(alice, other["id"])["originals"][0]["url"].rsplit("/", 1)[1]
        assert alice.get(f"/api/jobs/{job['id']}/files/{foreign}").status_code == 404
    finally:
        close_app(app)


def test_without_an_omero_session_nothing_is_confirmed(embedded_app, alice):
    from app.core.models import User

    job = alice.send({"a.ome.tif": ome_tiff(seed=44)})["jobs"][0]
    run(embedded_app, job["id"])
    with embedded_app.extensions["services"].db.session() as db:
        db.query(User).filter_by(username="alice").one().omero_key = None
        db.commit()
    confirmed = alice.get(f"/api/jobs/{job['id']}/confirm")
    assert confirmed.status_code == 200
    assert confirmed.get_json()["in_omero"] is False and "sign in again" in confirmed.get_json()["reason"]


def test_the_staff_see_an_import_to_check_with_its_reason(embedded_stack, monkeypatch):
    app = make_app(embedded_stack | {"PORTAL_STAFF_USERS": "sam"}, monkeypatch)
    try:
        alice = Portal(app.test_client(), "alice")
        job = alice.send({"a.ome.tif": ome_tiff(seed=45)})["jobs"][0]
        run(app, job["id"])
        sam = Portal(app.test_client(), "sam")
        listed = next(j for j in sam.get("/api/staff/jobs").get_json()["jobs"] if j["id"] == job["id"])
        assert listed["warnings"] == ["acquisition date unknown", "microscope unknown", "pixel size unknown"]
        page = sam.get(f"/staff/jobs/{job['id']}").get_data(as_text=True)
        assert "imported, check" in page and "acquisition date unknown, microscope unknown, pixel size unknown" in page
    finally:
        close_app(app)


def test_images_from_an_older_embedded_store_keep_their_fileset_file(embedded_app, alice):
    from app.core.omero.embedded import EmbeddedGateway

    data = ome_tiff(seed=46)
    job = alice.send({"old.ome.tif": data})["jobs"][0]
    run(embedded_app, job["id"])
    root = embedded_app.config["EMBEDDED_STORE_DIR"]
    with sqlite3.connect(root / "store.sqlite") as db:  # as a store from before files were recorded
        db.execute("DELETE FROM image_files")
        db.execute("DELETE FROM files")
    reopened = EmbeddedGateway(root, groups=("Lab",))
    (image,) = reopened.images_of("alice")
    assert [(f.name, f.sha1, f.kind) for f in image["files"]] == [("old.ome.tif", sha1(data), "fileset")]
    assert alice.get(f"/api/jobs/{job['id']}/confirm").get_json()["in_omero"] is True
