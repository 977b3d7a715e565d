"""Slow and silent clients cannot hold the web process: request bodies are read under a time limit.

gunicorn reads a body from a blocking socket without a timeout. A laptop that slept mid-chunk (40 of
100 declared bytes, then silence) kept its thread and its file's lock, so every resume was refused as
"being sent by another connection", with no end; 300 anonymous POSTs to /login that never finished
their bodies held 300 threads and starved the web process. Here every read of an upload chunk waits
at most PORTAL_BODY_TIMEOUT seconds for the next bytes (a chunk may take long while it moves), and a
smaller body (a form, JSON) must arrive whole within that time; a client that breaks either is
answered 400 (an upload keeps what arrived) and the thread is free.
"""
from __future__ import annotations

import time

from werkzeug.exceptions import ClientDisconnected

SMALL_BODY = 1 << 20  # bodies up to this size (forms, JSON) must arrive whole within the limit


class BodyTimeout:
    """WSGI middleware around the Flask app (gunicorn gives the connection as `gunicorn.socket`)."""

    def __init__(self, app, seconds: float):
        self.app, self.seconds = app, seconds

    def __call__(self, environ, start_response):
        sock = environ.get("gunicorn.socket")
        if sock is None:  # another server (the test client): nothing to time
            return self.app(environ, start_response)
        length = environ.get("CONTENT_LENGTH") or ""
        whole = not length.isdigit() or int(length) <= SMALL_BODY
        environ["wsgi.input"] = _TimedBody(environ["wsgi.input"], sock, self.seconds, whole)
        try:
            return self.app(environ, start_response)
        finally:
            sock.settimeout(None)  # the response is written without it (event streams wait on purpose)


class _TimedBody:
    def __init__(self, stream, sock, seconds: float, whole: bool):
        self.stream, self.sock, self.seconds = stream, sock, seconds
        self.deadline = time.monotonic() + seconds if whole else None

    def _timed(self, read, *args):
        left = self.seconds if self.deadline is None else self.deadline - time.monotonic()
        if left <= 0:
            raise self._too_slow()
        self.sock.settimeout(left)
        try:
            return read(*args)
        except TimeoutError:
            raise self._too_slow() from None

    def _too_slow(self) -> ClientDisconnected:
        how = "arrive whole" if self.deadline is not None else "move on"
        return ClientDisconnected(f"The request's body did not {how} within {self.seconds:g} s")

    def read(self, size: int = -1) -> bytes:
        return self._timed(self.stream.read, size)

    def readline(self, size: int = -1) -> bytes:
        return self._timed(self.stream.readline, size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return self._timed(self.stream.readlines, hint)

    def __iter__(self):
        while line := self.readline():
            yield line
