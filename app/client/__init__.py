"""A client of the portal's API for scripts and microscope PCs: `upload-portal push` and `watch`.

Pure Python (requests, pathlib), so it runs on Windows and on network shares. It authenticates with a
personal API token, lets the server group the files (one rule for the page and the client), and
hashes each file (first, when OMERO may hold its content already: then nothing is sent; else while
sending) and sends it in resumable chunks, several in flight, as the page does.
"""
from __future__ import annotations

import getpass
import hashlib
import os
import socket
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import requests

CHUNK = 16 << 20
IN_FLIGHT = 3  # chunks on their way at once: the next is read while the earlier ones travel
HASH_BLOCK = 1 << 20
FINAL = ("imported", "duplicate", "failed", "cancelled")
Progress = Callable[[str, int, int], None]  # (name, bytes sent, size)


class ClientError(Exception):
    """The portal refused something; the message says what."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the HTTP status, or None when the portal could not be reached


def config_dir() -> Path:
    base = os.environ.get("APPDATA") if os.name == "nt" else os.environ.get("XDG_CONFIG_HOME")
    return Path(base or Path.home() / ".config") / "upload-portal"


def find_token(interactive: bool = True) -> str:
    """The API token: $PORTAL_TOKEN, else the config file, else asked for (and not stored)."""
    token = os.environ.get("PORTAL_TOKEN", "").strip()
    path = config_dir() / "token"
    if not token and path.is_file():
        token = path.read_text().strip()
    if not token and interactive and sys.stdin.isatty():
        token = getpass.getpass("Personal API token (create one on the portal's Tokens page): ").strip()
    if not token:
        raise ClientError(f"No API token: set PORTAL_TOKEN or put it in {path}")
    return token


def _plain(error: Exception) -> str:
    """What went wrong with a connection, in words: requests wraps urllib3's error, which wraps the socket's."""
    seen = []
    while error is not None and error not in seen:
        seen.append(error)
        error = getattr(error, "reason", None) or error.__cause__ or error.__context__ or next(
            (a for a in error.args if isinstance(a, BaseException)), None)
    if any(isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError" for e in seen):
        return "no computer has that name"
    if any(isinstance(e, ssl.SSLError) for e in seen):
        return "its certificate is not trusted or it does not speak HTTPS"
    if any(isinstance(e, ConnectionRefusedError) for e in seen):
        return "nothing answers on that port"
    if any(isinstance(e, (TimeoutError, requests.Timeout)) for e in seen):
        return "no answer in time"
    return "the connection failed"


class PortalClient:
    def __init__(self, server: str, token: str | None = None, session: requests.Session | None = None,
                 retries: int = 8):
        self.server = server.rstrip("/")
        self.http = session or requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        self.retries = retries
        self.reached = False  # a portal never reached is a wrong address, not a restart to wait out

    def _call(self, method: str, path: str, **kwargs) -> dict:
        """One API call; network errors are retried with backoff once the portal has answered before,
        refusals raise ClientError."""
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, self.server + path, timeout=(20, 300), **kwargs)
            except (requests.ConnectionError, requests.Timeout) as e:
                if not self.reached:
                    raise ClientError(f"The portal at {self.server} cannot be reached ({_plain(e)}): "
                                      "check the address given with --server") from None
                if attempt == self.retries:
                    raise ClientError(f"The portal at {self.server} cannot be reached ({_plain(e)})") from None
                self._wait(attempt, "cannot be reached")
                continue
            self.reached = True
            if response.status_code >= 500 and attempt < self.retries:
                self._wait(attempt, f"answered {response.status_code}")
                continue
            try:
                body = response.json()
            except ValueError:
                body = {"error": response.text[:200]}
            if not response.ok:
                raise ClientError(body.get("error") or f"HTTP {response.status_code}", response.status_code)
            return body
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, why: str) -> None:
        """Back off before the next try, and say so: a restarting portal is not a hung client."""
        delay = min(60, 2 ** attempt)
        print(f"upload-portal: the portal at {self.server} {why}: trying again in {delay} s "
              f"({attempt + 1} of {self.retries})", file=sys.stderr, flush=True)
        time.sleep(delay)

    def me(self) -> dict:
        return self._call("GET", "/api/me")

    def group_id(self, wanted: str | None) -> int:
        groups = self.me()["groups"]
        if wanted is None:
            return groups[0]["id"]  # the default group comes first
        for group in groups:
            if wanted in (group["name"], str(group["id"])):
                return group["id"]
        raise ClientError(f"You are not in an OMERO group called {wanted!r}: "
                          + ", ".join(g["name"] for g in groups))

    def create_batch(self, group_id: int, files: dict[str, Path], key_values: list[tuple[str, str]],
                     folder: str | None, on_behalf_of: str | None = None) -> dict:
        """A new batch; with on_behalf_of (staff only) it belongs to that user, in one of their groups."""
        body = {"group_id": group_id, "key_values": [list(kv) for kv in key_values], "folder": folder,
                "files": [{"name": name, "size": path.stat().st_size} for name, path in files.items()]}
        if on_behalf_of:
            return self._call("POST", "/api/staff/batches", json=body | {"on_behalf_of": on_behalf_of})
        return self._call("POST", "/api/batches", json=body)

    def send_job(self, job: dict, paths: dict[str, Path], progress: Progress, hashes: Hashes) -> dict[str, str]:
        """Send a job's files still missing on the server, unless OMERO already holds their content (the
        job then ends "duplicate" without a byte sent); return the files' SHA-1s by name.

        Only a job the server calls a candidate (OMERO holds something of its size) is hashed before
        sending (`hashes` reads those ahead); the others are hashed from the chunks as they are sent,
        so each file is read once (twice the traffic on a network share otherwise)."""
        todo = [remote for remote in job["files"] if not remote["complete"]]
        candidate = job.get("may_be_in_omero", True)
        if candidate:
            checked = self._call("POST", f"/api/jobs/{job['id']}/check", json={"files": [
                {"id": r["id"], "sha1": hashes.sha1(paths[r["name"]])} for r in todo]})["job"]
            job.update(state=checked["state"], message=checked["message"])
        sums = {}
        if job["state"] == "uploading":
            for remote in todo:
                path = paths[remote["name"]]
                sums[remote["name"]] = self.send(remote, path, progress, lambda path=path: hashes.sha1(path),
                                                 known=hashes.sha1(path) if candidate else None)
        return {remote["name"]: sums.get(remote["name"]) or hashes.sha1(paths[remote["name"]]) for remote in todo}

    def send(self, remote: dict, path: Path, progress: Progress, sha1: Callable[[], str],
             known: str | None = None) -> str:
        """Send one file from where the server's copy ends, several chunks in flight (the server takes
        each in turn), then complete it with its SHA-1 and return that: `known`, else hashed from the
        chunks as they are read, else (sending resumed mid-file) sha1(), which reads the file whole.
        The server's worker checks the file against that SHA-1 before anything is imported."""
        size = remote["size"]  # what the batch declared: a file still being written must not pass for whole
        url = f"/api/files/{remote['id']}"
        offset = self._call("GET", url)["received"]
        running, hashed = (hashlib.sha1() if known is None and offset == 0 else None), 0
        stuck, turn = 0, 0
        # one buffer per chunk in flight, read into again once its chunk is answered: a fresh 16 MiB
        # bytes object per read costs the kernel zeroing its pages, a copy's time
        buffers = [bytearray(min(CHUNK, size)) for _ in range(IN_FLIGHT)]
        try:
            f = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise ClientError(_changed(path, size)) from None
        with f, ThreadPoolExecutor(IN_FLIGHT) as pool:
            while offset < size:
                flying: deque = deque()
                at = offset
                try:
                    while offset < size:
                        while len(flying) < IN_FLIGHT and at < size:  # read ahead while earlier chunks travel
                            f.seek(at)
                            block = _read_into(f, memoryview(buffers[turn])[:size - at])
                            turn = (turn + 1) % IN_FLIGHT
                            if not block:
                                raise ClientError(_changed(path, size))
                            flying.append(pool.submit(self._call, "PUT", f"{url}?offset={at}", data=block,
                                                      headers={"Content-Type": "application/octet-stream"}))
                            # hashed while it is sent (both only read the buffer), not before: the
                            # server, which takes the chunks in turn, would wait for the hashing
                            if running is not None and at == hashed:  # in order; bytes sent again were hashed
                                running.update(block)
                                hashed += len(block)
                            at += len(block)
                        offset = flying.popleft().result()["received"]
                        stuck = 0
                        progress(remote["name"], offset, size)
                except ClientError as e:
                    wait(flying)  # the later chunks are refused or wait in vain
                    held = self._call("GET", url)["received"]
                    if held == offset:
                        # 409 with nothing moved: an earlier try of ours (timed out here) may still be
                        # writing this file on the server; it ends soon, so wait for it
                        if e.status != 409 or stuck == self.retries:
                            raise
                        stuck += 1
                        self._wait(stuck, "is still writing an earlier try of this file")
                    offset = held
        if _size_now(path) != size:
            raise ClientError(_changed(path, size))
        claimed = known or (running.hexdigest() if running is not None and hashed == size else sha1())
        self._call("POST", f"{url}/complete", json={"sha1": claimed})
        return claimed

    def batch(self, batch_id: int) -> dict:
        return self._call("GET", f"/api/batches/{batch_id}")

    def wait(self, batch_id: int, job_ids: set[int], poll: float = 1.0) -> list[dict]:
        """Wait until these jobs end; return them."""
        while True:
            jobs = [j for j in self.batch(batch_id)["jobs"] if j["id"] in job_ids]
            if all(j["state"] in FINAL for j in jobs):
                return jobs
            time.sleep(poll)

    def confirm(self, job_id: int) -> dict:
        return self._call("GET", f"/api/jobs/{job_id}/confirm")


class Hashes:
    """SHA-1s of files computed in order on a thread of their own (those to check against OMERO before
    sending: the next is hashed while one is sent); any other file asked for is hashed then, once."""

    def __init__(self, paths: list[Path]):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sha1")
        self._futures = {path: self._pool.submit(sha1_of, path) for path in paths}
        self._pool.shutdown(wait=False)

    def sha1(self, path: Path) -> str:
        if path not in self._futures:  # not listed at the start: hashed now, once
            done: Future = Future()
            done.set_result(sha1_of(path))
            self._futures[path] = done
        return self._futures[path].result()


def _size_now(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _changed(path: Path, size: int) -> str:
    now = _size_now(path)
    if now is None:
        return f"{path.name} is gone: it was deleted or moved after the batch was made"
    return (f"{path.name} changed while it was sent ({size:,} bytes when the batch was made, "
            f"{now:,} now): is it still being written? Send it again once it is complete")


def _read_into(f, view: memoryview) -> memoryview:
    """As much of the file from its position as fits the view (less only at its end)."""
    got = 0
    while got < len(view) and (n := f.readinto(view[got:])):
        got += n
    return view[:got]


def sha1_of(path: Path) -> str:
    digest, block = hashlib.sha1(), bytearray(HASH_BLOCK)  # one buffer: a fresh one per read costs a copy's time
    with open(path, "rb", buffering=0) as f:
        while size := f.readinto(block):
            digest.update(memoryview(block)[:size])
    return digest.hexdigest()
