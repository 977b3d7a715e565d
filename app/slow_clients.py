"""Slow and silent clients cannot hold the web process: requests are read under a time limit.

gunicorn reads a request's head (its request line and headers) once the first byte came, and its body,
from a blocking socket without a timeout. A client trickling a byte of its head now and then held a
thread for ever, and a few hundred such held them all: a head must arrive whole within
PORTAL_BODY_TIMEOUT seconds (`PortalWorker`, `_Heads`). A laptop that slept mid-chunk (40 of
100 declared bytes, then silence) kept its thread and its file's lock, so every resume was refused as
"being sent by another connection", with no end; 300 anonymous POSTs to /login that never finished
their bodies held 300 threads and starved the web process. Here every read of an upload chunk waits
at most PORTAL_BODY_TIMEOUT seconds for the next bytes (a chunk may take long while it moves), and a
smaller body (a form, JSON) must arrive whole within that time; a client that breaks either is
answered 400 (an upload keeps what arrived) and the thread is free.

Upload chunks are read here too, straight from the socket into reused buffers (`_TimedBody.blocks`).
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from gunicorn.workers.gthread import ThreadWorker
from werkzeug.exceptions import ClientDisconnected

SMALL_BODY = 1 << 20  # bodies up to this size (forms, JSON) must arrive whole within the limit
KEPT_RINGS = 8  # receive buffers kept for the next uploads (allocating and zeroing them costs as much as a copy)
_rings: list[list[bytearray]] = []
_lock = threading.Lock()


@contextmanager
def body_blocks(stream, length: int, size: int) -> Iterator[Iterator[bytes | memoryview]]:
    """A request body of `length` bytes as blocks of at most `size`, each valid until two more have
    been read (the caller may hash one while it writes the next). Under gunicorn they are received
    into buffers lent for the request; the caller must be done with them when the block ends."""
    if not isinstance(stream, _TimedBody):
        yield _read_blocks(stream, length, size)
        return
    with _lock:
        ring = _rings.pop() if _rings and len(_rings[-1][0]) == size else [bytearray(size) for _ in range(3)]
    try:
        yield stream.blocks(length, ring)
    finally:
        with _lock:
            if len(_rings) < KEPT_RINGS:
                _rings.append(ring)


def _read_blocks(stream, length: int, size: int) -> Iterator[bytes]:
    while length > 0 and (block := stream.read(min(size, length))):
        length -= len(block)
        yield block


class _Heads:
    """Connections whose request head is being read, by file descriptor, with the time it must have
    arrived by. A watchdog shuts down one past its time: the thread reading it sees the connection end
    and gunicorn closes it."""

    def __init__(self):
        self.seconds = 30.0  # BodyTimeout sets the portal's limit
        self._reading: dict[int, tuple[socket.socket, float]] = {}
        self._lock = threading.Lock()
        self._watchdog: threading.Thread | None = None

    def reading(self, sock: socket.socket) -> int:
        with self._lock:
            self._reading[sock.fileno()] = (sock, time.monotonic() + self.seconds)
            if self._watchdog is None:  # started in the web process gunicorn forked, where the threads are
                self._watchdog = threading.Thread(target=self._watch, name="request-heads", daemon=True)
                self._watchdog.start()
        return sock.fileno()

    def read(self, fd: int) -> None:
        with self._lock:
            self._reading.pop(fd, None)

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.seconds / 4))
            now = time.monotonic()
            with self._lock:
                late = [self._reading.pop(fd)[0] for fd, (_, by) in list(self._reading.items()) if by < now]
            for sock in late:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:  # closed meanwhile
                    pass


HEADS = _Heads()


class PortalWorker(ThreadWorker):
    """gunicorn's threaded worker, whose connections must deliver each request's head in time."""

    def handle(self, conn):
        fd = HEADS.reading(conn.sock)
        try:
            return super().handle(conn)
        finally:
            HEADS.read(fd)


class BodyTimeout:
    """WSGI middleware around the Flask app (gunicorn gives the connection as `gunicorn.socket`)."""

    def __init__(self, app, seconds: float):
        self.app, self.seconds = app, seconds
        HEADS.seconds = seconds  # the same limit for a request's head

    def __call__(self, environ, start_response):
        sock = environ.get("gunicorn.socket")
        if sock is None:  # another server (the test client): nothing to time
            return self.app(environ, start_response)
        HEADS.read(sock.fileno())  # the head arrived: from here the body's limits apply
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

    def blocks(self, length: int, ring: list[bytearray]) -> Iterator[bytes | memoryview]:
        """The body's `length` bytes, received straight into the ring's buffers in turn (each block
        stays valid until the ring comes round to its buffer again). gunicorn's own reader passes
        every block through BytesIO objects: three copies more and a fresh allocation, a third of the
        upload API's time. A body that is not gunicorn's plain Content-Length one is read through
        read(). A connection that breaks or goes silent ends the blocks after the bytes that
        arrived, and gunicorn then closes it (where the next request starts is unknown)."""
        body = self.stream
        reader = getattr(body, "reader", None)
        unreader = getattr(reader, "unreader", None)
        if (type(reader).__name__ != "LengthReader" or reader.length != length or body.buf.tell()
                or not hasattr(unreader, "take_buffered")):
            yield from _read_blocks(self, length, len(ring[0]))
            return
        ahead = unreader.take_buffered()  # body bytes gunicorn read together with the headers
        if len(ahead) > length:  # a pipelined request behind this one: leave it to gunicorn
            unreader.unread(ahead[length:])
            ahead = ahead[:length]
        if ahead:
            reader.length -= len(ahead)
            yield ahead
        left, turn = length - len(ahead), 0
        while left > 0:
            view, got = memoryview(ring[turn])[:left], 0
            try:
                while got < len(view):
                    received = self._timed(self.sock.recv_into, view[got:])
                    if not received:
                        raise ClientDisconnected("The client closed the connection mid-body")
                    got += received
            except (OSError, ClientDisconnected):
                body.failed = True
                reader.length -= got
                if got:
                    yield view[:got]
                raise
            reader.length -= got
            left -= got
            turn = (turn + 1) % len(ring)
            yield view

    def readline(self, size: int = -1) -> bytes:
        return self._timed(self.stream.readline, size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return self._timed(self.stream.readlines, hint)

    def __iter__(self):
        while line := self.readline():
            yield line
