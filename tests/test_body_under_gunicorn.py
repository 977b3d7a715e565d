"""Chunks read straight from gunicorn's socket (app/api/body.py), over one raw keep-alive connection:
the bytes gunicorn's parser already buffered, a request pipelined behind a chunk, and a refused
chunk whose body gunicorn must still drain before the next request."""
import hashlib
import socket
from urllib.parse import urlsplit

from tests.sse_clients import signed_in


def raw_put(path: str, cookie: str, csrf: str, body: bytes) -> bytes:
    head = (f"PUT {path} HTTP/1.1\r\nHost: portal\r\nCookie: {cookie}\r\nX-CSRFToken: {csrf}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def answers(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """Read `count` HTTP responses (Content-Length bodies) from one connection."""
    data, out = b"", []
    while len(out) < count:
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536) or _closed()
        head, data = data.split(b"\r\n\r\n", 1)
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        while len(data) < length:
            data += sock.recv(65536) or _closed()
        out.append((int(head.split()[1]), data[:length]))
        data = data[length:]
    return out


def _closed():
    raise AssertionError("the server closed the connection")


def test_pipelined_chunks_and_a_refused_one_on_one_connection(served_without_worker):
    base = served_without_worker
    session, me = signed_in(base, "gus")
    data = bytes(range(256)) * 4096 * 3  # 3 MiB: several socket reads per chunk
    batch = session.post(base + "/api/batches", json={
        "group_id": me["groups"][0]["id"], "files": [{"name": "piped.ome.tif", "size": len(data)}]}).json()
    file_id = batch["jobs"][0]["files"][0]["id"]
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    csrf = session.headers["X-CSRFToken"]
    url = urlsplit(base)
    half = len(data) // 2
    with socket.create_connection((url.hostname, url.port)) as sock:
        # two chunks in one write: the second request sits behind the first one's body
        sock.sendall(raw_put(f"/api/files/{file_id}?offset=0", cookie, csrf, data[:half])
                     + raw_put(f"/api/files/{file_id}?offset={half}", cookie, csrf, data[half:half + 1000]))
        first, second = answers(sock, 2)
        # a chunk at the wrong offset is refused unread; gunicorn drains a small one (it closes the
        # connection when more than 64 KiB are left unread), and the connection lives on
        sock.sendall(raw_put(f"/api/files/{file_id}?offset=5", cookie, csrf, data[5:5 + 1000])
                     + raw_put(f"/api/files/{file_id}?offset={half + 1000}", cookie, csrf, data[half + 1000:]))
        refused, last = answers(sock, 2)
    assert first[0] == 200 and b'"received":%d' % half in first[1].replace(b" ", b"")
    assert second[0] == 200 and b'"received":%d' % (half + 1000) in second[1].replace(b" ", b"")
    assert refused[0] == 409
    assert last[0] == 200 and b'"received":%d' % len(data) in last[1].replace(b" ", b"")
    done = session.post(f"{base}/api/files/{file_id}/complete", json={"sha1": hashlib.sha1(data).hexdigest()})
    assert done.status_code == 200, done.text
