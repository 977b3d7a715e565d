"""A chunk's request body, read from the connection in large blocks.

gunicorn's `wsgi.input` passes every block through three BytesIO buffers (gunicorn issue #2596 and its
successors): about half of the web process's CPU while a file arrives. Under gunicorn the socket is read
directly instead, after the bytes its parser already holds, and gunicorn's own reader is told how much
is left so it can still drain a body we stop reading. Any other server gets the plain WSGI stream.
"""
from __future__ import annotations

import socket
from collections.abc import Iterator


def body_blocks(environ: dict, length: int, block: int) -> Iterator[bytes]:
    """The body's bytes in blocks of up to `block`, no further than `length`; fewer when the client
    goes away (what arrived is kept by the caller)."""
    direct = _gunicorn_parts(environ, length)
    if direct is None:
        yield from _stream_blocks(environ["wsgi.input"], length, block)
        return
    sock, reader, held = direct
    remaining = length
    if held:
        reader.length = remaining = length - len(held)
        yield held
    while remaining > 0:
        try:
            # MSG_WAITALL: one call per block instead of one per TCP segment
            data = sock.recv(min(block, remaining), socket.MSG_WAITALL)
        except OSError:  # the connection broke
            data = b""
        if not data:
            break
        reader.length = remaining = remaining - len(data)
        yield data


def _gunicorn_parts(environ: dict, length: int):
    """(socket, gunicorn's LengthReader, body bytes it already read) when the request is gunicorn's
    and nothing of its body was read yet; else None."""
    stream = environ.get("wsgi.input")
    sock = environ.get("gunicorn.socket")
    reader = getattr(stream, "reader", None)
    unreader = getattr(reader, "unreader", None)
    if (sock is None or not type(stream).__module__.startswith("gunicorn.")
            or type(reader).__name__ != "LengthReader" or getattr(reader, "length", None) != length
            or stream.buf.tell() != 0 or not hasattr(unreader, "take_buffered") or not hasattr(unreader, "unread")):
        return None
    held = unreader.take_buffered()
    if len(held) > length:  # the next request, pipelined behind this one: leave it to gunicorn
        unreader.unread(held[length:])
        held = held[:length]
    return sock, reader, held


def _stream_blocks(stream, length: int, block: int) -> Iterator[bytes]:
    remaining = length
    while remaining > 0:
        try:
            data = stream.read(min(block, remaining))
        except OSError:  # the connection broke
            data = b""
        if not data:
            break
        remaining -= len(data)
        yield data
