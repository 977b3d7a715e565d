"""Run one conversion in a child process under a time and a memory limit, and stop it at will.

Why a child process and not Celery's task limits: Celery has no memory limit per task
(`worker_max_memory_per_child` acts only after a task has ended), its hard time limit replaces the
whole pool process, and revoking with terminate needs remote-control broadcasts and a task id the
portal does not keep. A forked child takes the memory limit from the kernel (RLIMIT_DATA: what it
allocates, not the files it maps read-only), can be killed at any moment without harm to the worker
(the next job takes the slot at once), and works the same wherever `run_job` is called: a Celery
worker on either broker, or a test. The fork inherits the readers the worker warmed up.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import resource
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path

import converters
from converters.meta import human_size

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0  # how often a running conversion asks whether its job was cancelled
PROGRESS_EVERY = 0.2  # the child tells its progress at most this often
PR_SET_PDEATHSIG = 1  # prctl(2), Linux


@dataclass(frozen=True)
class Limits:
    seconds: float  # wall-clock time the conversion may take
    memory: int  # bytes it may allocate beyond what the worker holds when it starts

    @classmethod
    def for_job(cls, config, total_size: int) -> Limits:
        """The facility's limits; big files get more time (reading and writing take longer)."""
        return cls(config["CONVERT_TIME_LIMIT"] + config["CONVERT_TIME_PER_GIB"] * total_size / (1 << 30),
                   config["CONVERT_MEMORY_LIMIT"])


class LimitExceeded(Exception):
    """The conversion ran past a limit and was stopped; str() is the researcher's message."""

    def __init__(self, kind: str, message: str, detail: str):
        super().__init__(message)
        self.kind, self.detail = kind, detail  # "time" | "memory"; the staff's diagnostics


class OutOfSpace(Exception):
    """The disk filled while converting: nothing is wrong with the file; try again when there is room."""


class ConversionCrashed(Exception):
    """The child died without an answer (a signal, a crash in a reader's C code)."""


def convert(paths: list[Path], out: Path, options: converters.ConvertOptions, limits: Limits,
            stop_check: Callable[[], None]) -> converters.Conversion:
    """converters.convert in a limited child. stop_check is called every POLL_SECONDS and raises to
    stop the conversion (the job was cancelled or given to another worker); the child is killed then."""
    name = paths[0].name
    data_limit, parent = _data_bytes() + limits.memory, os.getpid()
    read_end, write_end = os.pipe()
    # os.fork, not multiprocessing: a Celery pool process is "daemonic", and multiprocessing refuses
    # to start children there
    pid = os.fork()
    if pid == 0:  # the child: never returns into the worker's code
        status = 1
        try:
            os.close(read_end)
            _child(Connection(write_end), paths, out, options, data_limit, parent)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    receive, started, reaped = Connection(read_end), time.monotonic(), None
    try:
        next_poll = started + POLL_SECONDS
        while True:
            now = time.monotonic()
            if now - started > limits.seconds:
                os.kill(pid, signal.SIGKILL)
                reaped = os.wait4(pid, 0)
                raise LimitExceeded(
                    "time", f"Converting {name} stopped after {limits.seconds:.3g} s, the longest a conversion "
                            f"of its size may take here: the file may be damaged or built to exhaust the server; "
                            f"the facility staff can see the details",
                    f"time limit {limits.seconds:.1f} s exceeded; peak memory {human_size(_peak(reaped))}")
            if now >= next_poll:
                stop_check()
                next_poll = now + POLL_SECONDS
            if not wait([receive], timeout=max(0.0, min(next_poll, started + limits.seconds) - now) + 0.01):
                continue
            try:
                kind, value = receive.recv()
            except EOFError:
                reaped = os.wait4(pid, 0)
                raise ConversionCrashed(f"the conversion of {name} ended without an answer "
                                        f"(wait status {reaped[1]})") from None
            if kind == "progress":
                if options.progress:
                    options.progress(value)
                continue
            reaped = os.wait4(pid, 0)
            return _outcome(kind, value, name, limits, time.monotonic() - started, _peak(reaped))
    finally:
        if reaped is None:  # stopped from here (cancelled, lease lost, an error): kill it and reap it
            os.kill(pid, signal.SIGKILL)
            os.wait4(pid, 0)
        receive.close()


def _peak(reaped: tuple[int, int, resource.struct_rusage]) -> int:
    return reaped[2].ru_maxrss * 1024  # kilobytes on Linux


def _outcome(kind: str, value, name: str, limits: Limits, took: float, peak: int) -> converters.Conversion:
    if kind == "done":
        log.info("converted %s in %.1f s, peak memory %s", name, took, human_size(peak))
        return value
    if kind == "memory":
        raise LimitExceeded(
            "memory", f"Converting {name} stopped: it needed more than the {human_size(limits.memory)} of memory a "
                      f"conversion may use here; the file may be damaged or built to exhaust the server",
            f"memory limit {human_size(limits.memory)} exceeded after {took:.1f} s; peak memory {human_size(peak)}")
    if kind == "space":
        raise OutOfSpace(f"The transfer server's disk filled while converting {name}")
    if kind == "refused":
        raise converters.ConversionError(value)
    raise ConversionCrashed(value)  # "crash": a bug, with its traceback for the staff


def _child(send, paths: list[Path], out: Path, options: converters.ConvertOptions, data_limit: int,
           parent: int) -> None:
    _die_with(parent)
    resource.setrlimit(resource.RLIMIT_DATA, (data_limit, data_limit))
    last = 0.0

    def progress(share: float) -> None:
        nonlocal last
        if time.monotonic() - last >= PROGRESS_EVERY:
            last = time.monotonic()
            send.send(("progress", share))

    try:
        answer = ("done", converters.convert(paths, out, replace(options, progress=progress)))
    except BaseException as e:  # noqa: BLE001 - every ending is told to the parent, which decides
        answer = _failure(e)
    send.send(answer)
    send.close()


def _die_with(parent: int) -> None:
    """Be killed when the worker process dies (SIGKILL, the OOM killer): no orphan converts on."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def _failure(error: BaseException) -> tuple[str, object]:
    chain = _chain(error)
    # thread stacks count against RLIMIT_DATA too: a thread that cannot start is memory running out
    if any(isinstance(e, MemoryError) or "can't start new thread" in str(e) for e in chain):
        return "memory", None
    if any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in chain):
        return "space", None
    if isinstance(error, converters.ConversionError):
        return "refused", str(error)
    return "crash", "".join(traceback.format_exception(error))


def _chain(error: BaseException) -> list[BaseException]:
    """The error and the ones it was raised from or while handling (`from None` hides, not drops, them)."""
    found = []
    while error is not None and error not in found:
        found.append(error)
        error = error.__cause__ or error.__context__
    return found


def _data_bytes() -> int:
    """What this process has allocated (VmData, what RLIMIT_DATA counts): the child starts from it."""
    return _status_kib(os.getpid(), "VmData") * 1024


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith(field + ":")), 0)
    except OSError:
        return 0
