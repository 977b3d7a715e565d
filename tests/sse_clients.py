"""Helpers for driving the live portal over HTTP: sign in, and read SSE streams in threads."""
from __future__ import annotations

import json
import re
import threading
import time

import requests


def signed_in(base: str, username: str) -> tuple[requests.Session, dict]:
    session = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', session.get(base + "/login").text).group(1)
    session.post(base + "/login", data={"username": username, "csrf_token": token})
    me = session.get(base + "/api/me").json()
    session.headers["X-CSRFToken"] = me["csrf_token"]
    return session, me


class StreamReader(threading.Thread):
    """Reads one SSE stream; records (arrival time, payload) for each job event."""

    def __init__(self, session: requests.Session, url: str):
        super().__init__(daemon=True)
        self.session, self.url = session, url
        self.events: list[tuple[float, dict]] = []
        self.ready = threading.Event()
        self.stop = False

    def run(self) -> None:
        try:
            with self.session.get(self.url, stream=True, timeout=60) as response:
                for line in response.iter_lines(chunk_size=1, decode_unicode=True):
                    if line.startswith("retry:"):
                        self.ready.set()
                    elif line.startswith("data:"):
                        self.events.append((time.monotonic(), json.loads(line[5:])))
                    if self.stop:
                        return
        except requests.RequestException:  # the server went away: the test or benchmark is over
            return
