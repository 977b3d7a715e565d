"""The real path: Flask app, a real Celery worker process, the broker and database of the stack
(embedded defaults, or PostgreSQL + Redis), and the embedded OMERO store."""
import hashlib
import io
import socket
from urllib.parse import urlparse

import numpy as np
import pytest
import tifffile

from app.core.models import Job
from tests.helpers import Portal, ome_tiff, wait_until


def job_row(app, job_id):
    with app.extensions["services"].db.session() as db:
        return db.get(Job, job_id)


def test_a_file_travels_through_a_real_worker_and_its_events_arrive(app, worker):
    from tests.sse_clients import read_stream

    worker.start()
    alice = Portal(app.test_client(), "alice")
    batch = alice.send({"a.ome.tif": ome_tiff(seed=1, microscope="Krios G4")}, key_values=[["Sample", "S-1"]])
    job_id = batch["jobs"][0]["id"]
    wait_until(lambda: job_row(app, job_id).state == "imported", timeout=90, what="the job to be imported")
    states = [m["job"]["state"] for _, m in read_stream(alice.client, f"/api/events?after={batch['cursor']}")]
    assert states[0] == "queued" and states[-1] == "imported" and "importing" in states
    assert job_row(app, job_id).project == "Krios G4"


def big_ome_tiff(megabytes: int, seed: int) -> bytes:
    pixels = np.zeros((megabytes, 1024, 1024), np.uint8)
    pixels[:, 0, :8] = np.random.default_rng(seed).integers(0, 255, (megabytes, 8))
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, ome=True, metadata={"axes": "ZYX"})
    return buffer.getvalue()


def test_a_worker_killed_mid_import_is_replaced_and_the_job_imports_once(app, worker):
    worker.start()
    alice = Portal(app.test_client(), "alice")
    batch = alice.send({"big.ome.tif": big_ome_tiff(384, seed=2)})
    job_id = batch["jobs"][0]["id"]
    wait_until(lambda: job_row(app, job_id).state == "importing", timeout=90, interval=0.005,
               what="the import to start")
    worker.kill()  # SIGKILL, the whole worker: no chance to clean up or ack
    assert job_row(app, job_id).state == "importing"
    worker.start()
    wait_until(lambda: job_row(app, job_id).state == "imported", timeout=120, what="the job to finish")
    done = job_row(app, job_id)
    assert done.attempts == 2
    assert [image["name"] for image in app.extensions["services"].omero.images_of("alice")] == ["big.ome.tif"]


def test_a_transfer_cut_mid_request_resumes_from_the_servers_offset(app, live_server):
    import requests

    session = requests.Session()
    login = session.get(live_server + "/login").text
    import re

    token = re.search(r'name="csrf_token" value="([^"]+)"', login).group(1)
    session.post(live_server + "/login", data={"username": "carol", "csrf_token": token})
    me = session.get(live_server + "/api/me").json()
    headers = {"X-CSRFToken": me["csrf_token"]}
    data = np.random.default_rng(3).bytes(6 << 20)
    batch = session.post(live_server + "/api/batches", headers=headers, json={
        "group_id": me["groups"][0]["id"], "files": [{"name": "cut.emd", "size": len(data)}]}).json()
    file_id = batch["jobs"][0]["files"][0]["id"]

    # A raw request that promises the whole file, sends 2.5 MB and drops the connection.
    host = urlparse(live_server)
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    with socket.create_connection((host.hostname, host.port)) as raw:
        raw.sendall((f"PUT /api/files/{file_id}?offset=0 HTTP/1.1\r\nHost: {host.netloc}\r\n"
                     f"Cookie: {cookie}\r\nX-CSRFToken: {me['csrf_token']}\r\n"
                     f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n").encode())
        raw.sendall(data[:2_500_000])
    held = wait_until(lambda: session.get(f"{live_server}/api/files/{file_id}").json().get("received") or None,
                      timeout=20, what="the server to keep what arrived")
    assert 0 < held <= 2_500_000

    def resume():  # as a client does: from the server's offset, again while the cut request winds down (409)
        offset = session.get(f"{live_server}/api/files/{file_id}").json()["received"]
        resumed = session.put(f"{live_server}/api/files/{file_id}?offset={offset}", data=data[offset:], headers=headers)
        return resumed.status_code == 200 and resumed.json()["received"]

    assert wait_until(resume, timeout=20, interval=0.2, what="the resumed transfer") == len(data)
    done = session.post(f"{live_server}/api/files/{file_id}/complete", headers=headers,
                        json={"sha1": hashlib.sha1(data).hexdigest()})
    assert done.status_code == 200 and done.json()["complete"]


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_a_broken_file_fails_its_row_and_the_worker_goes_on(app, worker):
    worker.start()
    alice = Portal(app.test_client(), "alice")
    batch = alice.send({"broken.tif": b"II*\x00" + b"\xff" * 64, "good.ome.tif": ome_tiff(seed=4)})
    ids = [j["id"] for j in batch["jobs"]]
    wait_until(lambda: all(job_row(app, i).state in ("imported", "failed") for i in ids), timeout=90,
               what="both jobs to finish")
    assert [job_row(app, i).state for i in ids] == ["failed", "imported"]
