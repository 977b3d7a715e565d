"""Where uploaded bytes wait for their job: `<staging>/<job id>/<safe name>`.

The file on disk is the truth about how much has arrived (a crash mid-write loses at most the bytes
of that write, and the client resumes from the size it is told). Bytes stream through in blocks;
nothing holds a whole file in memory.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import os
import re
import shutil
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from app.core.db import utcnow
from app.core.models import Job, JobFile, JobState
from converters.meta import human_size

BLOCK = 1 << 20
TURN_WAIT = 10.0  # seconds a chunk sent ahead waits without the file growing before it is refused
TURN_POLL = 0.02  # a chunk of this process wakes the next at once; one of another web process is seen this late
PROMISE_HOURS = 24
_HASH_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="staging-sha1")


class StagingError(Exception):
    def __init__(self, message: str, status: int, code: str | None = None):
        super().__init__(message)
        self.status, self.code = status, code  # code: for the page to act on ("resume": ask where to go on)


# What a long name keeps at its end: the extension (the format is read from it) and a TIA series
# number (x_1.ser belongs to x.emi). At most 24 bytes, so the part before is always cut to the same
# length and the files of one group still match after cutting.
_TAIL = re.compile(r"(?:_\d{1,6})?(?:\.ome)?\.[A-Za-z0-9]{1,10}$", re.IGNORECASE)
MAX_NAME_BYTES = 200


def safe_name(name: str) -> str:
    """A file name that keeps what a person recognises and cannot escape the job's folder."""
    name = unicodedata.normalize("NFC", name.replace("\\", "/").rsplit("/", 1)[-1])
    name = re.sub(r"[\x00-\x1f\x7f:*?\"<>|]", "_", name).strip(" .")
    if len(name.encode()) > MAX_NAME_BYTES:
        tail = _TAIL.search(name)
        tail = tail.group(0) if tail and tail.start() else ""
        head = name[:len(name) - len(tail)]
        while len(head.encode()) > MAX_NAME_BYTES - 24:
            head = head[:-1]
        name = head + tail
    return name or "file"


class Staging:
    def __init__(self, root: Path, reserve: int):
        self.root = Path(root)
        self.reserve = reserve
        self.root.mkdir(parents=True, exist_ok=True)
        # file id -> (bytes held, running SHA-1 of them), for files whose every chunk matched its digest
        self._checked: OrderedDict[int, tuple[int, object]] = OrderedDict()
        self._lock = threading.Lock()
        self._turns = _Turns()

    def job_dir(self, job_id: int) -> Path:
        return self.root / str(job_id)

    def path(self, job_id: int, stored_name: str) -> Path:
        return self.job_dir(job_id) / stored_name

    def received(self, job_id: int, stored_name: str) -> int:
        try:
            return self.path(job_id, stored_name).stat().st_size
        except FileNotFoundError:
            return 0

    def check_room(self, needed: int, promised: int) -> None:
        """Refuse a batch of `needed` bytes unless the disk holds them beside the bytes accepted batches
        are still to send (`promised`) and the reserve: two batches accepted at once must both fit."""
        free = shutil.disk_usage(self.root).free - self.reserve - promised
        if needed > free:
            raise StagingError(
                f"The transfer server has room for {human_size(max(free, 0))} now and this batch needs "
                f"{human_size(needed)}: import fewer files, or ask the facility staff to free space", 507)

    def promised(self, session, now: datetime | None = None) -> int:
        """Bytes accepted batches are still to send: each unfinished file's declared size less what
        arrived. A transfer silent for PROMISE_HOURS keeps no room from others (it may never come back)."""
        now = now or utcnow()
        rows = session.execute(select(JobFile.job_id, JobFile.stored_name, JobFile.size, Job.created_at)
                               .join(Job, Job.id == JobFile.job_id)
                               .where(Job.state == JobState.UPLOADING, JobFile.completed_at.is_(None)))
        quiet_since, total = time.time() - PROMISE_HOURS * 3600, 0
        for job_id, stored_name, size, created_at in rows:
            try:
                stat = self.path(job_id, stored_name).stat()
                held, touched = stat.st_size, stat.st_mtime
            except FileNotFoundError:
                held, touched = 0, 0.0
            if created_at > now - timedelta(hours=PROMISE_HOURS) or touched > quiet_since:
                total += max(0, size - held)
        return total

    def write(self, file_id: int, job_id: int, stored_name: str, offset: int, blocks: Iterable[bytes],
              limit: int, digest: bytes | None = None, length: int = 0) -> int:
        """Append blocks at offset (which must be the size already held); return the new size.

        With `digest` (the SHA-256 of the chunk's `length` bytes, sent by the page) the chunk counts
        only when all its bytes arrived and match it (else it is dropped whole), and while every chunk
        of a file does, the file's SHA-1 is computed as it arrives (`checked_sha1`): the page then needs
        none of its own (the browser hashes its chunks natively, faster than the whole file in
        WebAssembly). Chunks without a digest are only written: the client names the file's SHA-1 at
        complete, and the worker checks the staged file against it before anything is imported (it
        reads the file for that in any case; hashing here too cost the web process half its CPU)."""
        path = self.path(job_id, stored_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            return self._append(file_id, path, os.fdopen(fd, "r+b", buffering=0), offset, blocks, limit, digest, length)
        finally:  # the file is closed, its lock gone: the chunk sent next may go on
            self._turns.told()

    def _append(self, file_id: int, path: Path, f, offset: int, blocks: Iterable[bytes], limit: int,
                digest: bytes | None, length: int) -> int:
        with f:
            held = _await_turn(f, offset, self._turns)
            chunk = hashlib.sha256() if digest is not None else None
            sha1 = self._continued(file_id, held) if chunk is not None else None
            written, hashing = held, None
            try:
                f.seek(held)
                for block in blocks:
                    if written + len(block) > limit:
                        raise StagingError("More bytes were sent than the file's declared size", 400)
                    # hashlib and write() both release the GIL: hash this block while writing it
                    if hashing is not None:
                        hashing.result()
                    if chunk is not None:
                        hashing = _HASH_POOL.submit(_update, sha1, chunk, block)
                    view = memoryview(block)
                    while view:  # a nearly full disk takes part of a block: count only what it took
                        done = f.write(view)
                        written += done
                        view = view[done:]
                if hashing is not None:
                    hashing.result()
                if chunk is not None and (written - held != length or chunk.digest() != digest):
                    f.truncate(held)  # the running hash of what is held stays cached (`sha1` is a copy)
                    raise StagingError("This chunk arrived damaged or incomplete (it does not match its "
                                       "Content-Digest): send it again", 422, "damaged_chunk")
            except OSError as e:
                f.truncate(written)
                self._forget(file_id)
                if e.errno == errno.ENOSPC:
                    raise StagingError("The transfer server's disk is full: nothing was lost, retry later "
                                       "or ask the facility staff", 507) from None
                raise
            except StagingError:
                raise
            except BaseException:
                if hashing is not None:
                    hashing.cancel()
                # keep what arrived whole (the client resumes from it), but it was not checked
                self._forget(file_id)
                raise
            if sha1 is not None:
                self._remember(file_id, written, sha1)
            else:
                self._forget(file_id)
            _start_writeback(f.fileno(), held, written - held)
            return written

    def persist(self, job_id: int, stored_name: str) -> None:
        """Make the file and its name durable: a job is queued only once a power cut cannot take its bytes
        (each chunk's writeback started as it arrived, so little is left to wait for here)."""
        path = self.path(job_id, stored_name)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOTSUP):  # a filesystem that cannot sync a folder
                raise
        finally:
            os.close(fd)

    def checked_sha1(self, file_id: int, job_id: int, stored_name: str) -> str | None:
        """The SHA-1 of the bytes held if every one of them arrived in chunks that matched their
        Content-Digest, as far as this process saw them; else None (a restart or another web process
        forgets, and the client then names the SHA-1)."""
        size = self.received(job_id, stored_name)
        if size == 0:
            return hashlib.sha1().hexdigest()
        with self._lock:
            cached = self._checked.get(file_id)
        return cached[1].hexdigest() if cached and cached[0] == size else None

    def _continued(self, file_id: int, held: int):
        """A copy of the running SHA-1 of the `held` bytes, if all were checked; else None."""
        if held == 0:
            return hashlib.sha1()
        with self._lock:
            cached = self._checked.get(file_id)
        return cached[1].copy() if cached and cached[0] == held else None

    def _remember(self, file_id: int, size: int, sha1) -> None:
        with self._lock:
            self._checked[file_id] = (size, sha1)
            self._checked.move_to_end(file_id)
            while len(self._checked) > 256:
                self._checked.popitem(last=False)

    def _forget(self, file_id: int) -> None:
        with self._lock:
            self._checked.pop(file_id, None)

    def reset(self, file_id: int, job_id: int, stored_name: str) -> None:
        """Drop a file whose bytes failed their checksum, so it is sent again from the start."""
        self._forget(file_id)
        self.path(job_id, stored_name).unlink(missing_ok=True)

    def remove_job(self, job_id: int) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)


def _sync_file_range():
    try:
        return ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):  # not Linux
        return None


_SYNC_FILE_RANGE = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, count: int) -> None:
    """Start writing these bytes to disk now, without waiting (Linux): a 50 GB upload then never piles up
    as dirty memory for the kernel to flush in one burst, and the disk works while the network does."""
    if _SYNC_FILE_RANGE is not None and count > 0:
        _SYNC_FILE_RANGE(fd, ctypes.c_int64(offset), ctypes.c_int64(count), ctypes.c_uint(_SYNC_FILE_RANGE_WRITE))


def _update(sha1, chunk, block) -> None:
    chunk.update(block)
    if sha1 is not None:
        sha1.update(block)


class _Turns:
    """A chunk that lets go of its file wakes the chunks of this process waiting for theirs at once
    (one of another web process is seen at the next poll)."""

    def __init__(self):
        self._told = threading.Condition()
        self.count = 0

    def told(self) -> None:
        with self._told:
            self.count += 1
            self._told.notify_all()

    def wait(self, since: int, seconds: float) -> None:
        with self._told:
            if self.count == since:  # nothing let go since the caller looked
                self._told.wait(seconds)


def _await_turn(f, offset: int, turns: _Turns) -> int:
    """Lock the file once it holds exactly `offset` bytes; return that size.

    A client keeps several chunks in flight: one sent ahead waits here (its body unread) while the
    file grows from the chunks before it, and gives up after TURN_WAIT seconds without growth.
    """
    deadline, last = time.monotonic() + TURN_WAIT, None
    while True:
        since = turns.count
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            locked = False
        held = os.fstat(f.fileno()).st_size
        if locked and held == offset:
            return held
        if locked:
            fcntl.flock(f, fcntl.LOCK_UN)
        if held > offset:
            raise StagingError(f"The server holds {held} bytes of this file; resume from there", 409, "resume")
        if held != last:
            deadline, last = time.monotonic() + TURN_WAIT, held
        if time.monotonic() > deadline:
            if not locked:
                raise StagingError("This file is being sent by another connection right now", 409, "resume")
            raise StagingError(f"The server holds {held} bytes of this file; resume from there", 409, "resume")
        turns.wait(since, TURN_POLL)


def hash_file(path: Path):
    """The SHA-1 of a file (empty if it is missing), read through one reused buffer."""
    digest, block = hashlib.sha1(), bytearray(BLOCK * 8)
    if not path.exists():
        return digest
    with open(path, "rb", buffering=0) as f:
        while size := f.readinto(block):
            digest.update(memoryview(block)[:size])
    return digest
