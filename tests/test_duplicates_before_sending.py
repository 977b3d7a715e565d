"""The duplicate check before sending (POST /api/jobs/<id>/check) and chunks sent ahead of their turn."""
import hashlib
import threading

import pytest

from app.core import staging as staging_module
from tests.helpers import Portal, ome_tiff
from workers import pipeline


@pytest.fixture
def alice(embedded_app):
    return Portal(embedded_app.test_client(), "alice")


def imported(app, portal, name, data, group_id):
    batch = portal.send({name: data}, group_id=group_id)
    with app.app_context():
        assert pipeline.run_job(app.extensions["services"], batch["jobs"][0]["id"], "w1") == "imported"
    return portal.get(f"/api/batches/{batch['id']}").get_json()["jobs"][0]


def check(portal, job, data):
    return portal.post(f"/api/jobs/{job['id']}/check", json={
        "files": [{"id": job["files"][0]["id"], "sha1": hashlib.sha1(data).hexdigest()}]})


def test_content_omero_holds_in_this_group_ends_duplicate_without_a_byte(embedded_app, alice):
    lab = alice.me["groups"][0]["id"]
    data = ome_tiff(seed=21)
    first = imported(embedded_app, alice, "a.ome.tif", data, lab)
    job = alice.new_batch({"renamed copy.ome.tif": data}, group_id=lab)["jobs"][0]
    assert job["may_be_in_omero"]  # OMERO holds a file of this size: hash it before sending

    answer = check(alice, job, data)
    assert answer.status_code == 200
    checked = answer.get_json()["job"]
    assert checked["state"] == "duplicate" and checked["image_ids"] == first["image_ids"]
    assert f"image {first['image_ids'][0]}" in checked["message"] and checked["link"]
    assert alice.get(f"/api/files/{job['files'][0]['id']}").get_json()["received"] == 0
    refused = alice.put(f"/api/files/{job['files'][0]['id']}?offset=0", data=data)
    assert refused.status_code == 409 and "not waiting" in refused.get_json()["error"]
    # OMERO itself confirms it holds this content: a watcher may delete its local copy
    confirmed = alice.get(f"/api/jobs/{job['id']}/confirm").get_json()
    assert confirmed["in_omero"] and confirmed["sha1"] == {"renamed copy.ome.tif": hashlib.sha1(data).hexdigest()}


def test_the_same_content_in_another_group_is_named_but_does_not_block(embedded_app, alice):
    lab, facility = (grp["id"] for grp in alice.me["groups"])
    data = ome_tiff(seed=22)
    elsewhere = imported(embedded_app, alice, "a.ome.tif", data, facility)
    batch = alice.new_batch({"a.ome.tif": data}, group_id=lab)
    job = batch["jobs"][0]
    assert job["may_be_in_omero"]  # the sieve looks in every group

    answer = check(alice, job, data).get_json()
    assert answer["job"]["state"] == "uploading" and answer["checked"]
    assert [image["id"] for image in answer["elsewhere"]] == elsewhere["image_ids"]
    assert "another of your groups" in answer["job"]["message"]
    alice.put(f"/api/files/{job['files'][0]['id']}?offset=0", data=data)
    alice.post(f"/api/files/{job['files'][0]['id']}/complete", json={"sha1": hashlib.sha1(data).hexdigest()})
    with embedded_app.app_context():
        assert pipeline.run_job(embedded_app.extensions["services"], job["id"], "w1") == "imported"
    # the row's last message still says so (queueing and converting replaced the check's note)
    final = alice.get(f"/api/batches/{batch['id']}").get_json()["jobs"][0]
    assert f"another of your groups (image {elsewhere['image_ids'][0]}" in final["message"]
    assert final["image_ids"] != elsewhere["image_ids"]


def test_new_content_is_sent_as_before(embedded_app, alice):
    data = ome_tiff(seed=23)
    job = alice.new_batch({"new.ome.tif": data})["jobs"][0]
    assert job["may_be_in_omero"] is False  # no file of this size in OMERO: send at once, hash meanwhile
    answer = check(alice, job, data).get_json()
    assert answer == {"job": answer["job"], "checked": True, "elsewhere": []}
    assert answer["job"]["state"] == "uploading" and answer["job"]["message"] == ""


def test_when_omero_cannot_answer_every_job_is_checked_before_sending(alice, monkeypatch):
    from app.core.omero import embedded
    from app.core.omero.base import OmeroError

    def down(self, sizes):
        raise OmeroError("OMERO is not answering")

    monkeypatch.setattr(embedded.EmbeddedSession, "content_sizes", down)
    jobs = alice.new_batch({"a.ome.tif": b"1" * 10, "b.ome.tif": b"2" * 20})["jobs"]
    assert [job["may_be_in_omero"] for job in jobs] == [True, True]


def test_a_converted_source_is_a_candidate_by_its_size_whatever_its_name(embedded_app, alice):
    """A converted import's OMERO files differ from its source: the sieve knows the source's size
    from the import's provenance, also for a pair of files."""
    from tests.helpers import sample

    emi, ser = sample("64x64x5_TEM_preview.emi").read_bytes(), sample("64x64x5_TEM_preview_1.ser").read_bytes()
    batch = alice.send({"a.emi": emi, "a_1.ser": ser})
    with embedded_app.app_context():
        assert pipeline.run_job(embedded_app.extensions["services"], batch["jobs"][0]["id"], "w1") == "imported"
    again = alice.new_batch({"b.emi": emi, "b_1.ser": ser, "other.emi": emi + b"!", "other_1.ser": ser})["jobs"]
    assert [job["may_be_in_omero"] for job in again] == [True, False]


@pytest.mark.parametrize("files, needle", [
    (None, "files must list"),
    ([{"id": 0, "sha1": "A" * 40}], "40 lowercase hex"),
    ([{"id": 0, "sha1": "ab"}], "40 lowercase hex"),
    ([], "each of this job's files"),
])
def test_a_bad_check_is_refused_with_a_reason(alice, files, needle):
    job = alice.new_batch({"x.ome.tif": b"12345"})["jobs"][0]
    if files:
        files = [{**f, "id": job["files"][0]["id"]} for f in files]
    response = alice.post(f"/api/jobs/{job['id']}/check", json={"files": files})
    assert response.status_code == 400 and needle in response.get_json()["error"]


def test_another_users_job_cannot_be_checked(embedded_app, alice):
    data = b"12345"
    job = alice.new_batch({"x.ome.tif": data})["jobs"][0]
    bob = Portal(embedded_app.test_client(), "bob")
    assert check(bob, job, data).status_code == 404


def test_a_chunk_sent_ahead_waits_for_the_one_before_it(embedded_app, tmp_path):
    staging = embedded_app.extensions["services"].staging
    first, second = b"a" * 3000, b"b" * 2000
    ahead = {}
    later = threading.Thread(target=lambda: ahead.update(
        held=staging.write(1, 7, "f.raw", len(first), [second], 5000, hashlib.sha256(second).digest(), len(second))))
    later.start()
    later.join(0.3)
    assert later.is_alive()  # waiting for its turn, not refused
    assert staging.write(1, 7, "f.raw", 0, [first], 5000, hashlib.sha256(first).digest(), len(first)) == 3000
    later.join(10)
    assert ahead["held"] == 5000 and staging.path(7, "f.raw").read_bytes() == first + second
    assert staging.checked_sha1(1, 7, "f.raw") == hashlib.sha1(first + second).hexdigest()  # hashed in turn


def test_a_chunk_whose_turn_never_comes_is_refused_with_the_offset(embedded_app, monkeypatch):
    monkeypatch.setattr(staging_module, "TURN_WAIT", 0.2)
    staging = embedded_app.extensions["services"].staging
    with pytest.raises(staging_module.StagingError, match="holds 0 bytes"):
        staging.write(2, 8, "g.raw", 100, [b"x" * 10], 200)
