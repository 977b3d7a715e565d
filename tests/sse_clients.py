"""Helpers for driving the live portal over HTTP: sign in, and read SSE streams in threads."""
from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator

import requests
import urllib3


def signed_in(base: str, username: str, session: requests.Session | None = None) -> tuple[requests.Session, dict]:
    """Sign in over HTTP as a browser does (in `session`, e.g. one with response hooks); (session, /api/me)."""
    session = session or requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', session.get(base + "/login").text).group(1)
    session.post(base + "/login", data={"username": username, "csrf_token": token})
    me = session.get(base + "/api/me").json()
    session.headers["X-CSRFToken"] = me["csrf_token"]
    return session, me


def sse_lines(response: requests.Response) -> Iterator[str]:
    """The stream's lines as they arrive: read1 returns what the socket holds, so no line waits for
    more bytes, and a busy stream costs one read per packet, not one per byte."""
    pending = b""
    while chunk := response.raw.read1(65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode()


class StreamReader(threading.Thread):
    """Reads one SSE stream; records (arrival time, payload) for each job event, and in `cursors`
    the `id:` of the same message (the cursor a reconnect would resume after)."""

    def __init__(self, session: requests.Session, url: str):
        super().__init__(daemon=True)
        self.session, self.url = session, url
        self.events: list[tuple[float, dict]] = []
        self.cursors: list[int | None] = []
        self.ready = threading.Event()
        self.stop = False
        self.error: Exception | None = None  # why the stream ended, when it was not asked to

    def run(self) -> None:
        cursor = None
        try:
            with self.session.get(self.url, stream=True, timeout=60) as response:
                for line in sse_lines(response):
                    if line.startswith("retry:"):
                        self.ready.set()
                    elif line.startswith("id:"):
                        cursor = int(line[3:])
                    elif line.startswith("data:"):
                        self.events.append((time.monotonic(), json.loads(line[5:])))
                        self.cursors.append(cursor)
                    if self.stop:
                        return
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
            self.error = e  # the server went away: the test or benchmark is over, or a load test failed


def read_stream(client, url, heartbeats=2, headers=None):
    """Collect (sse_id, payload) pairs until `heartbeats` idle heartbeats have passed."""
    response = client.get(url, buffered=False, headers=headers or {})
    assert response.mimetype == "text/event-stream"
    messages, seen_heartbeats = [], 0
    for chunk in response.response:
        text = chunk.decode() if isinstance(chunk, bytes) else chunk
        if text.startswith(": heartbeat"):
            seen_heartbeats += 1
            if seen_heartbeats >= heartbeats:
                break
        elif text.startswith("id:"):
            lines = dict(line.split(": ", 1) for line in text.strip().split("\n"))
            messages.append((int(lines["id"]), json.loads(lines["data"])))
    response.close()
    return messages
