import base64
import hashlib

import pytest

from app.core.staging import Staging
from tests.helpers import OPEN_REDIRECTS, ome_tiff


@pytest.fixture
def alice(embedded_app):
    from tests.helpers import Portal

    return Portal(embedded_app.test_client(), "alice")


@pytest.mark.parametrize("body, needle", [
    ({"files": [{"name": "a.tif", "size": 1}]}, "Choose one of your OMERO groups"),
    ({"group_id": 999, "files": [{"name": "a.tif", "size": 1}]}, "Choose one of your OMERO groups"),
    ({"files": []}, "files must list"),
    ({"files": [{"name": "a.tif", "size": -1}]}, "name and a size"),
    ({"files": [{"name": "a.tif", "size": True}]}, "name and a size"),
    ({"files": [{"name": "a.tif", "size": 1}], "key_values": [["Sample", ""]]}, "key-value pair"),
    ({"files": [{"name": "a.tif", "size": 1}], "key_values": [["Sample"]]}, "key-value pair"),
    ({"files": [{"name": "a.tif", "size": 1}], "key_values": "Sample=x"}, "key_values must be"),
])
def test_bad_batches_are_refused_with_a_reason(alice, body, needle):
    if "group_id" not in body and "Choose" not in needle:
        body = {"group_id": alice.me["groups"][0]["id"], **body}
    response = alice.post("/api/batches", json=body)
    assert response.status_code == 400 and needle in response.get_json()["error"]


def test_a_file_over_the_limit_is_refused_before_any_byte(alice, embedded_app):
    embedded_app.config["MAX_FILE_SIZE"] = 1000
    response = alice.post("/api/batches", json={"group_id": alice.me["groups"][0]["id"],
                                                "files": [{"name": "big.emd", "size": 1001}]})
    assert response.status_code == 413 and "big.emd" in response.get_json()["error"]
    assert alice.get("/api/batches").get_json()["batches"] == []


def test_a_batch_that_does_not_fit_the_staging_disk_is_refused(alice, embedded_app):
    embedded_app.extensions["services"].staging.reserve = 1 << 60  # as if the disk were full
    response = alice.post("/api/batches", json={"group_id": alice.me["groups"][0]["id"],
                                                "files": [{"name": "a.tif", "size": 10}]})
    assert response.status_code == 507 and "room" in response.get_json()["error"]


def test_grouping_problems_become_failed_rows_that_need_no_bytes(alice):
    batch = alice.new_batch({"run_1.ser": b"x", "acq.emi": b"y", "image.tif": b"z"})
    states = {tuple(f["name"] for f in j["files"]): (j["state"], j["message"]) for j in batch["jobs"]}
    assert states[("run_1.ser",)][0] == "failed" and "run.emi" in states[("run_1.ser",)][1]
    assert states[("acq.emi",)][0] == "failed" and "acq_1.ser" in states[("acq.emi",)][1]
    assert states[("image.tif",)] == ("uploading", "")


def test_chunks_resume_from_the_servers_offset_and_the_checksum_holds(alice):
    data = ome_tiff((64, 64), seed=1)
    batch = alice.new_batch({"a.ome.tif": data})
    file_id = batch["jobs"][0]["files"][0]["id"]
    assert alice.put(f"/api/files/{file_id}?offset=0", data=data[:1000]).get_json()["received"] == 1000
    stale = alice.put(f"/api/files/{file_id}?offset=0", data=data[:1000])  # a retry of a chunk that arrived
    assert stale.status_code == 409 and "1000" in stale.get_json()["error"]
    assert alice.get(f"/api/files/{file_id}").get_json()["received"] == 1000
    early = alice.post(f"/api/files/{file_id}/complete", json={"sha1": hashlib.sha1(data).hexdigest()})
    assert early.status_code == 409
    alice.put(f"/api/files/{file_id}?offset=1000", data=data[1000:])
    done = alice.post(f"/api/files/{file_id}/complete", json={"sha1": hashlib.sha1(data).hexdigest()})
    assert done.get_json()["complete"] is True
    assert alice.batch(batch["id"])["jobs"][0]["state"] == "queued"


def test_a_file_is_on_disk_before_its_job_is_queued(alice, embedded_app, monkeypatch):
    """complete flushes the file and its folder entry first: a power cut after "queued" cannot take the
    bytes; a disk that fails the flush drops the file (Linux forgets such pages) and it is sent again."""
    import os

    flushed = []
    real_fdatasync, real_fsync = os.fdatasync, os.fsync

    def noting(real):
        def sync(fd):
            flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
            return real(fd)
        return sync

    monkeypatch.setattr(os, "fdatasync", noting(real_fdatasync))
    monkeypatch.setattr(os, "fsync", noting(real_fsync))
    data = ome_tiff((64, 64), seed=3)
    batch = alice.new_batch({"a.ome.tif": data, "b.ome.tif": data[::-1]})
    (a, b) = (job["files"][0] for job in batch["jobs"])
    staging = embedded_app.extensions["services"].staging
    for remote, content in ((a, data), (b, data[::-1])):
        alice.put(f"/api/files/{remote['id']}?offset=0", data=content)
    done = alice.post(f"/api/files/{a['id']}/complete", json={"sha1": hashlib.sha1(data).hexdigest()})
    assert done.get_json()["complete"] is True
    staged = staging.path(batch["jobs"][0]["id"], "a.ome.tif")
    assert flushed == [str(staged), str(staged.parent)]

    def failing(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    refused = alice.post(f"/api/files/{b['id']}/complete", json={"sha1": hashlib.sha1(data[::-1]).hexdigest()})
    assert refused.status_code == 422 and "could not write the file to its disk" in refused.get_json()["error"]
    assert alice.get(f"/api/files/{b['id']}").get_json()["received"] == 0
    assert [job["state"] for job in alice.batch(batch["id"])["jobs"]] == ["queued", "uploading"]


def test_more_bytes_than_declared_are_refused(alice):
    batch = alice.new_batch({"a.tif": b"1234"})
    file_id = batch["jobs"][0]["files"][0]["id"]
    assert alice.put(f"/api/files/{file_id}?offset=0", data=b"12345").status_code == 400


def test_a_damaged_file_is_reset_and_sent_again(alice):
    data = ome_tiff(seed=2)
    batch = alice.new_batch({"a.ome.tif": data})
    file_id = batch["jobs"][0]["files"][0]["id"]
    alice.put(f"/api/files/{file_id}?offset=0", data=data, headers=_digest(data))
    bad = alice.post(f"/api/files/{file_id}/complete", json={"sha1": "0" * 40})
    assert bad.status_code == 422 and "damaged" in bad.get_json()["error"]
    assert alice.get(f"/api/files/{file_id}").get_json()["received"] == 0


def test_a_sha1_that_is_no_sha1_is_refused(alice):
    data = ome_tiff(seed=6)
    file_id = alice.new_batch({"a.ome.tif": data})["jobs"][0]["files"][0]["id"]
    alice.put(f"/api/files/{file_id}?offset=0", data=data)
    refused = alice.post(f"/api/files/{file_id}/complete", json={"sha1": "not a sha1"})
    assert refused.status_code == 400 and "40 hexadecimal digits" in refused.get_json()["error"]
    assert alice.get(f"/api/files/{file_id}").get_json()["complete"] is False


def _digest(chunk: bytes) -> dict:
    return {"Content-Digest": f"sha-256=:{base64.b64encode(hashlib.sha256(chunk).digest()).decode()}:"}


def test_chunks_checked_by_their_digest_complete_without_a_sha1(alice):
    """The page's way: each chunk with its SHA-256 (RFC 9530 Content-Digest); one that does not
    match is dropped whole, and a file whose every chunk matched completes without a SHA-1."""
    data = ome_tiff((64, 64), seed=4)
    batch = alice.new_batch({"a.ome.tif": data})
    file_id = batch["jobs"][0]["files"][0]["id"]
    first, rest = data[:3000], data[3000:]
    assert alice.put(f"/api/files/{file_id}?offset=0", data=first, headers=_digest(first)).get_json()["received"] == 3000
    damaged = alice.put(f"/api/files/{file_id}?offset=3000", data=b"\0" + rest[1:], headers=_digest(rest))
    assert damaged.status_code == 422 and damaged.get_json()["code"] == "damaged_chunk"
    assert alice.get(f"/api/files/{file_id}").get_json()["received"] == 3000  # dropped whole
    assert alice.put(f"/api/files/{file_id}?offset=3000", data=rest, headers=_digest(rest)).get_json()["received"] == len(data)
    done = alice.post(f"/api/files/{file_id}/complete", json={})
    assert done.status_code == 200 and done.get_json()["sha1"] == hashlib.sha1(data).hexdigest()
    assert alice.batch(batch["id"])["jobs"][0]["state"] == "queued"


@pytest.mark.parametrize("header", ["sha-256=:AAAA:", "sha-256=abc", "sha-256=:" + "A" * 43 + "=:x"])
def test_a_malformed_content_digest_is_refused(alice, header):
    batch = alice.new_batch({"a.tif": b"1234"})
    file_id = batch["jobs"][0]["files"][0]["id"]
    refused = alice.put(f"/api/files/{file_id}?offset=0", data=b"1234", headers={"Content-Digest": header})
    assert refused.status_code == 400 and "Content-Digest" in refused.get_json()["error"]
    assert alice.get(f"/api/files/{file_id}").get_json()["received"] == 0


def test_a_file_with_unchecked_chunks_needs_its_sha1(alice, embedded_app):
    """A chunk without a digest (or a server that forgot, as after a restart) leaves nothing to vouch
    for the bytes: completing without a SHA-1 is refused with the code the page acts on."""
    data = ome_tiff((64, 64), seed=5)
    batch = alice.new_batch({"a.ome.tif": data, "b.ome.tif": data[::-1]})
    a, b = (j["files"][0]["id"] for j in batch["jobs"])
    alice.put(f"/api/files/{a}?offset=0", data=data[:100], headers=_digest(data[:100]))
    alice.put(f"/api/files/{a}?offset=100", data=data[100:])  # no digest
    alice.put(f"/api/files/{b}?offset=0", data=data[::-1], headers=_digest(data[::-1]))
    services = embedded_app.extensions["services"]
    services.staging = Staging(services.staging.root, services.staging.reserve)  # a restarted web process
    for file_id, content in ((a, data), (b, data[::-1])):
        needed = alice.post(f"/api/files/{file_id}/complete", json={})
        assert needed.status_code == 409 and needed.get_json()["code"] == "sha1_needed"
        done = alice.post(f"/api/files/{file_id}/complete", json={"sha1": hashlib.sha1(content).hexdigest()})
        assert done.get_json()["complete"] is True


def test_cancel_a_queued_job_and_retry_only_failed_ones(alice, embedded_app):
    data = ome_tiff(seed=3)
    batch = alice.send({"a.ome.tif": data})
    job_id = batch["jobs"][0]["id"]
    assert alice.post(f"/api/jobs/{job_id}/retry").status_code == 409
    assert alice.post(f"/api/jobs/{job_id}/cancel").get_json()["state"] == "cancelled"
    assert not embedded_app.extensions["services"].staging.job_dir(job_id).exists()


def test_state_changing_calls_without_the_csrf_token_are_refused(alice):
    batch = alice.new_batch({"a.tif": b"1234"})
    file_id, job_id = batch["jobs"][0]["files"][0]["id"], batch["jobs"][0]["id"]
    client = alice.client
    for method, url, kw in [
        ("post", "/api/batches", {"json": {"group_id": 1, "files": [{"name": "b.tif", "size": 1}]}}),
        ("put", f"/api/files/{file_id}?offset=0", {"data": b"1234"}),
        ("post", f"/api/files/{file_id}/complete", {"json": {"sha1": "x"}}),
        ("post", f"/api/jobs/{job_id}/cancel", {}),
        ("post", f"/api/jobs/{job_id}/retry", {}),
        ("post", "/logout", {}),
        ("post", "/login", {"data": {"username": "mallory"}}),
    ]:
        assert getattr(client, method)(url, **kw).status_code == 400, url
    assert alice.get(f"/api/files/{file_id}").get_json()["received"] == 0


def test_signed_out_requests_get_401_and_pages_redirect(embedded_app):
    client = embedded_app.test_client()
    assert client.get("/api/batches").status_code == 401
    response = client.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.parametrize("target, allowed", [("/store", True), ("/store?view=1", True)]
                         + [(target, False) for target in OPEN_REDIRECTS])
def test_sign_in_redirects_only_within_the_portal(embedded_app, target, allowed):
    import re

    client = embedded_app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    response = client.post("/login?next=" + target, data={"username": "zoe", "csrf_token": token})
    assert (response.headers["Location"] == target) is allowed


def test_each_refusal_carries_the_code_the_page_acts_on(alice, embedded_app):
    """The page and scripts branch on `code` (docs/api.md), never on the message's words."""
    data = ome_tiff(seed=5)
    batch = alice.new_batch({"a.ome.tif": data})
    file_id = batch["jobs"][0]["files"][0]["id"]

    def refusal(response):
        return response.status_code, response.get_json()["code"]

    assert refusal(alice.put(f"/api/files/{file_id}?offset=3", data=data[3:])) == (409, "resume")
    assert refusal(alice.post(f"/api/files/{file_id}/complete", json={"sha1": "0" * 40})) == (409, "incomplete")
    assert alice.put(f"/api/files/{file_id}?offset=0", data=data, headers=_digest(data)).status_code == 200
    assert refusal(alice.post(f"/api/files/{file_id}/complete", json={"sha1": "0" * 40})) == (422, "damaged")
    assert alice.post(f"/api/jobs/{batch['jobs'][0]['id']}/cancel").get_json()["state"] == "cancelled"
    assert refusal(alice.put(f"/api/files/{file_id}?offset=0", data=data)) == (409, "not_waiting")
    assert refusal(alice.post(f"/api/jobs/{batch['jobs'][0]['id']}/cancel")) == (409, "not_allowed")
    assert refusal(alice.post("/api/batches", json={"files": []})) == (400, "invalid")
    assert refusal(alice.get("/api/batches/999999")) == (404, "not_found")
    assert refusal(embedded_app.test_client().get("/api/me")) == (401, "sign_in")
    assert refusal(embedded_app.test_client().post("/api/batches", json={})) == (400, "csrf")  # a cookie request
