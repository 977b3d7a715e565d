"""A client of the portal's API for scripts and microscope PCs: `upload-portal push` and `watch`.

Pure Python (requests, pathlib), so it runs on Windows and on network shares. It authenticates with a
personal API token, lets the server group the files (one rule for the page and the client), and
sends each file in resumable chunks with its SHA-1, as the page does.
"""
from __future__ import annotations

import getpass
import hashlib
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

CHUNK = 16 << 20
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


class PortalClient:
    def __init__(self, server: str, token: str | None = None, session: requests.Session | None = None,
                 retries: int = 8):
        self.server = server.rstrip("/")
        self.http = session or requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        self.retries = retries

    def _call(self, method: str, path: str, **kwargs) -> dict:
        """One API call; network errors are retried with backoff, refusals raise ClientError."""
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, self.server + path, timeout=300, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as e:
                if attempt == self.retries:
                    raise ClientError(f"The portal at {self.server} cannot be reached: {e}") from None
                self._wait(attempt, "cannot be reached")
                continue
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

    def send(self, remote: dict, path: Path, progress: Progress) -> str:
        """Send one file from where the server's copy ends; return its SHA-1."""
        size = path.stat().st_size
        offset = self._call("GET", f"/api/files/{remote['id']}")["received"]
        busy = 0
        with open(path, "rb") as f, ThreadPoolExecutor(1) as hasher:
            digest = _hash_prefix(f, offset)
            while offset < size:
                f.seek(offset)
                block = f.read(CHUNK)
                hashing = hasher.submit(digest.update, block)  # hashlib releases the GIL: overlap the PUT
                try:
                    held = self._call("PUT", f"/api/files/{remote['id']}?offset={offset}", data=block,
                                      headers={"Content-Type": "application/octet-stream"})["received"]
                    hashing.result()
                except ClientError as e:
                    hashing.result()
                    held = self._call("GET", f"/api/files/{remote['id']}")["received"]
                    if held == offset:
                        # 409 with nothing moved: an earlier try of ours (timed out here) may still be
                        # writing this file on the server; it ends soon, so wait for it
                        if e.status != 409 or busy == self.retries:
                            raise
                        busy += 1
                        self._wait(busy, "is still writing an earlier try of this file")
                        digest = _hash_prefix(f, offset)  # the block went into it: take it out again
                        continue
                if held != offset + len(block):  # the server kept another amount: hash what it holds
                    digest = _hash_prefix(f, held)
                offset = held
                progress(remote["name"], offset, size)
        sha1 = digest.hexdigest()
        self._call("POST", f"/api/files/{remote['id']}/complete", json={"sha1": sha1})
        return sha1

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


def _hash_prefix(f, length: int):
    """SHA-1 state over the first `length` bytes of an open file."""
    digest = hashlib.sha1()
    f.seek(0)
    remaining = length
    while remaining > 0 and (block := f.read(min(CHUNK, remaining))):
        digest.update(block)
        remaining -= len(block)
    return digest


def sha1_of(path: Path) -> str:
    with open(path, "rb") as f:
        return _hash_prefix(f, path.stat().st_size).hexdigest()
