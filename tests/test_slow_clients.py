"""Slow and silent clients against the real web server (gunicorn): a chunk that stalls mid-body
releases its file within PORTAL_BODY_TIMEOUT, and anonymous POSTs that never finish their bodies do
not starve the web process (app.slow_clients)."""
from __future__ import annotations

import hashlib
import socket
from urllib.parse import urlparse

import pytest
import requests

from tests.helpers import wait_until
from tests.sse_clients import signed_in

pytestmark = pytest.mark.parametrize("stack", ["embedded"], indirect=True)


@pytest.fixture
def stack(stack):
    return stack | {"PORTAL_BODY_TIMEOUT": "1"}  # short in tests; 30 s by default


def raw_request(url: str, head: str, body_start: bytes) -> socket.socket:
    """Send a request's head and the first bytes of its body, then go silent (the socket stays open)."""
    where = urlparse(url)
    sock = socket.create_connection((where.hostname, where.port), timeout=30)
    sock.sendall(head.encode() + b"\r\n" + body_start)
    return sock


def test_a_chunk_that_stalls_mid_body_releases_its_file(live_server):
    session, me = signed_in(live_server, "alice")
    data = bytes(range(100))
    batch = session.post(live_server + "/api/batches", json={"group_id": me["groups"][0]["id"],
                                                            "files": [{"name": "a.tif", "size": 100}]}).json()
    file_id = batch["jobs"][0]["files"][0]["id"]
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    stalled = raw_request(live_server, f"PUT /api/files/{file_id}?offset=0 HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n"
                                       f"X-CSRFToken: {me['csrf_token']}\r\nContent-Length: 100\r\n", data[:40])
    try:  # a laptop that slept: 40 of 100 bytes, then silence (its connection still open)

        def resumed():  # from what the server holds (the stalled block's bytes may be lost, never more)
            held = session.get(f"{live_server}/api/files/{file_id}").json()["received"]
            sent = session.put(f"{live_server}/api/files/{file_id}?offset={held}", data=data[held:])
            return sent.status_code == 200 and sent.json()["received"] == 100

        wait_until(resumed, timeout=60, interval=0.5, what="the resume to be accepted")
        done = session.post(f"{live_server}/api/files/{file_id}/complete", json={"sha1": hashlib.sha1(data).hexdigest()})
        assert done.status_code == 200, done.text
    finally:
        stalled.close()


def test_anonymous_posts_that_never_finish_do_not_starve_the_web(live_server):
    """300 slow POSTs to /login, more than the web's 160 threads, all left silent: a visitor's page
    still answers, and each slow request is answered 400 and closed."""
    head = "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n"
    slow = [raw_request(live_server, head, b"username=") for _ in range(300)]
    try:
        page = requests.get(live_server + "/login", timeout=60)
        assert page.status_code == 200 and "csrf_token" in page.text
        answers = []
        for sock in slow:
            sock.settimeout(60)
            answers.append(sock.recv(64))
        assert all(answer.startswith(b"HTTP/1.1 400") for answer in answers), set(a[:20] for a in answers)
    finally:
        for sock in slow:
            sock.close()
