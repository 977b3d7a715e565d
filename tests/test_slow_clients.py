"""Slow and silent clients against the real web server (gunicorn): a chunk that stalls mid-body
releases its file within PORTAL_BODY_TIMEOUT, and anonymous POSTs that never finish their bodies do
not starve the web process (app.slow_clients)."""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from urllib.parse import urlparse

import numpy as np
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


def _cookie(session) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in session.cookies)


def _read_response(sock: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """(status line, body, bytes after it) of one HTTP/1.1 response with a Content-Length."""
    while b"\r\n\r\n" not in buffered:
        buffered += sock.recv(65536) or pytest.fail(f"connection closed after {buffered!r}")
    head, rest = buffered.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(rest) < length:
        rest += sock.recv(65536) or pytest.fail("connection closed mid-response")
    return head.split(b"\r\n")[0], rest[:length], rest[length:]


@pytest.mark.parametrize("size", [5, (3 << 20) + 5])
def test_a_chunk_and_the_request_pipelined_behind_it_are_both_answered(live_server, size):
    """Chunk bodies are received straight from the socket (app.slow_clients): a chunk with the next
    request sent in the same breath (a small one arrives with its headers and the next request's,
    a large one fills the receive buffers several times) lands byte for byte, and the next request
    is served on the same connection."""
    session, me = signed_in(live_server, "alice")
    data = np.random.default_rng(7).integers(0, 256, size, dtype=np.uint8).tobytes()
    batch = session.post(live_server + "/api/batches", json={"group_id": me["groups"][0]["id"],
                                                            "files": [{"name": "a.tif", "size": len(data)}]}).json()
    file_id = batch["jobs"][0]["files"][0]["id"]
    auth = f"Host: x\r\nCookie: {_cookie(session)}\r\nX-CSRFToken: {me['csrf_token']}\r\n"
    sock = socket.create_connection((urlparse(live_server).hostname, urlparse(live_server).port), timeout=30)
    with sock:
        sock.sendall(f"PUT /api/files/{file_id}?offset=0 HTTP/1.1\r\n{auth}Content-Length: {len(data)}\r\n\r\n".encode()
                     + data + f"GET /api/files/{file_id} HTTP/1.1\r\n{auth}\r\n".encode())
        status, body, rest = _read_response(sock)
        assert status.endswith(b"200 OK") and json.loads(body)["received"] == len(data), body
        status, body, _ = _read_response(sock, rest)
        assert status.endswith(b"200 OK") and json.loads(body)["received"] == len(data), body
    done = session.post(f"{live_server}/api/files/{file_id}/complete", json={"sha1": hashlib.sha1(data).hexdigest()})
    assert done.status_code == 200, done.text


def test_a_connection_cut_mid_chunk_keeps_a_prefix_of_what_arrived(live_server):
    """A client gone after 2.5 of 4 MiB: the server holds a prefix of the bytes sent, never a byte
    more or a byte wrong, and the resume from there completes with the file's SHA-1."""
    session, me = signed_in(live_server, "alice")
    data = np.random.default_rng(8).integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()
    batch = session.post(live_server + "/api/batches", json={"group_id": me["groups"][0]["id"],
                                                            "files": [{"name": "a.tif", "size": len(data)}]}).json()
    file_id = batch["jobs"][0]["files"][0]["id"]
    cut = raw_request(live_server, f"PUT /api/files/{file_id}?offset=0 HTTP/1.1\r\nHost: x\r\nCookie: {_cookie(session)}\r\n"
                                   f"X-CSRFToken: {me['csrf_token']}\r\nContent-Length: {len(data)}\r\n",
                      data[:5 << 19])
    cut.close()

    def resumed():  # once the cut request has let go of the file
        held = session.get(f"{live_server}/api/files/{file_id}").json()["received"]
        assert held <= 5 << 19
        sent = session.put(f"{live_server}/api/files/{file_id}?offset={held}", data=data[held:])
        return sent.status_code == 200 and sent.json()["received"] == len(data)

    wait_until(resumed, timeout=60, interval=0.5, what="the resume to be accepted")
    done = session.post(f"{live_server}/api/files/{file_id}/complete", json={"sha1": hashlib.sha1(data).hexdigest()})
    assert done.status_code == 200, done.text


def test_a_chunk_with_a_digest_cut_mid_body_is_dropped_whole(live_server):
    """The page's chunks carry their SHA-256: one that breaks off cannot be checked, so none of it
    is kept, and the file goes on from the chunk's start."""
    session, me = signed_in(live_server, "alice")
    data = np.random.default_rng(9).integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"
    batch = session.post(live_server + "/api/batches", json={"group_id": me["groups"][0]["id"],
                                                            "files": [{"name": "a.tif", "size": len(data)}]}).json()
    file_id = batch["jobs"][0]["files"][0]["id"]
    cut = raw_request(live_server, f"PUT /api/files/{file_id}?offset=0 HTTP/1.1\r\nHost: x\r\nCookie: {_cookie(session)}\r\n"
                                   f"X-CSRFToken: {me['csrf_token']}\r\nContent-Digest: {digest}\r\n"
                                   f"Content-Length: {len(data)}\r\n", data[:5 << 19])
    cut.close()
    accepted_at = []

    def resumed():
        held = session.get(f"{live_server}/api/files/{file_id}").json()["received"]
        sent = session.put(f"{live_server}/api/files/{file_id}?offset={held}", data=data[held:],
                           headers={"Content-Digest": "sha-256=:" + base64.b64encode(
                               hashlib.sha256(data[held:]).digest()).decode() + ":"})
        if sent.status_code == 200:
            accepted_at.append(held)
        return sent.status_code == 200

    wait_until(resumed, timeout=60, interval=0.5, what="the resume to be accepted")
    assert accepted_at == [0]
    done = session.post(f"{live_server}/api/files/{file_id}/complete", json={})
    assert done.status_code == 200 and done.json()["sha1"] == hashlib.sha1(data).hexdigest()


def test_heads_that_trickle_in_do_not_starve_the_web(live_server):
    """gunicorn reads a request's head without a time limit once its first byte came: 300 clients
    (more than the web's 160 threads) that send part of a head and then a byte now and then, never
    silent long enough for a read timeout, are each cut off once their head is late, and a visitor's
    page still answers."""
    where = urlparse(live_server)
    slow = [socket.create_connection((where.hostname, where.port), timeout=60) for _ in range(300)]
    stop = threading.Event()

    def trickle():  # a header byte on each connection every 0.2 s, until the server cuts it
        while not stop.wait(0.2):
            for sock in slow:
                try:
                    sock.send(b"X")
                except OSError:
                    pass

    trickling = threading.Thread(target=trickle)
    try:
        for sock in slow:
            sock.sendall(b"GET /login HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        trickling.start()
        page = requests.get(live_server + "/login", timeout=60)
        assert page.status_code == 200 and "csrf_token" in page.text
        for sock in slow:  # each was closed without an answer: its head never ended
            try:
                assert sock.recv(64) == b""
            except ConnectionResetError:
                pass
    finally:
        stop.set()
        if trickling.is_alive():
            trickling.join()
        for sock in slow:
            sock.close()
