"""The in-memory OMERO behind the fake services: users, groups, sessions and the object graph.

It keeps the rules the adapter relies on: a session has a reference count and survives a
disconnect only when detached; a session with a time-to-idle ends when no call touched it for that
long, unless a connection keeps it alive (omero-server ome/services/sessions/state/SessionCache
raises SessionTimeoutException past timeToIdle; omero-py's client.enableKeepAlive pings it); objects live in one group and are owned by one user; a call acts in
the group of its `omero.group` context (-1 = all the user's groups) and fails for a non-member;
ids are allocated before a transaction commits and only committed rows are visible, so two
concurrent creates really both happen (and a lower id may become visible later).
"""
from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from dataclasses import dataclass, field

import omero


@dataclass
class User:
    id: int
    name: str
    first: str
    last: str
    password: str
    groups: list[int]  # the default group first
    admin: bool = False
    email: str = ""
    sudo: bool = True  # an admin's Sudo privilege (a light admin may lack it)
    leads: list[int] = field(default_factory=list)  # the groups this user owns (a group owner may sudo in them)


@dataclass
class GroupRow:
    id: int
    name: str
    perms: str = "rwr---"  # read-only: members see, but cannot link to, each other's objects


@dataclass
class SessionRow:
    uuid: str
    user: int
    refcount: int = 0
    alive: bool = True
    time_to_idle: float = 0  # seconds; 0: never idles out
    last_access: float = 0.0
    keepers: int = 0  # open connections that enabled keep-alive


@dataclass
class Row:
    kind: str  # project, dataset, pdlink, image, pixels, dilink, fileset, entry, file, tag, map, ialink
    id: int
    owner: int
    group: int
    fields: dict = field(default_factory=dict)


BUILTIN_GROUPS = {"system": 0, "user": 1, "guest": 2}


class Store:
    def __init__(self, commit_jitter: float = 0.0, seed: int = 4):
        self.lock = threading.RLock()
        self._ids = itertools.count(100)
        self.users: dict[str, User] = {}
        self.groups: dict[int, GroupRow] = {gid: GroupRow(gid, name) for name, gid in BUILTIN_GROUPS.items()}
        self.sessions: dict[str, SessionRow] = {}
        self.rows: dict[int, Row] = {}  # committed rows only
        self.commit_jitter = commit_jitter
        self._random = random.Random(seed)
        self.reachable = True
        self._clock_offset = 0.0  # advance() moves the server's clock: idle timeouts without waiting
        # query name -> (barrier, threads that passed it): each thread's first such query waits for
        # the others, so a test can line up N workers that all find nothing and all create.
        self.rendezvous: dict[str, tuple[threading.Barrier, set[int]]] = {}

    def line_up(self, query_name: str, parties: int) -> None:
        self.rendezvous[query_name] = (threading.Barrier(parties), set())

    def meet(self, query_name: str) -> None:
        if query_name not in self.rendezvous:
            return
        barrier, passed = self.rendezvous[query_name]
        me = threading.get_ident()
        with self.lock:
            first = me not in passed
            passed.add(me)
        if first:
            barrier.wait(timeout=10)

    # -- people ---------------------------------------------------------------------------------

    def add_group(self, name: str, perms: str = "rwr---") -> int:
        with self.lock:
            gid = next(self._ids)
            self.groups[gid] = GroupRow(gid, name, perms)
            return gid

    def add_user(self, name: str, groups: list[int], *, password: str = "secret", admin: bool = False,
                 first: str = "", last: str = "") -> User:
        with self.lock:
            member_of = list(groups) + [BUILTIN_GROUPS["user"]] + ([BUILTIN_GROUPS["system"]] if admin else [])
            user = User(next(self._ids), name, first or name.title(), last or "Tester", password, member_of, admin,
                        f"{name}@example.org")
            self.users[name] = user
            return user

    def user_by_id(self, uid: int) -> User:
        return next(u for u in self.users.values() if u.id == uid)

    def new_session(self, user: User, refcount: int = 1, time_to_idle: float = 0) -> SessionRow:
        with self.lock:
            s = SessionRow(str(uuid.uuid4()), user.id, refcount, time_to_idle=time_to_idle, last_access=self.now())
            self.sessions[s.uuid] = s
            return s

    def now(self) -> float:
        return time.monotonic() + self._clock_offset

    def advance(self, seconds: float) -> None:
        self._clock_offset += seconds

    def touch(self, s: SessionRow) -> bool:
        """Whether the session is still alive; a call to it counts as activity."""
        with self.lock:
            idle = self.now() - s.last_access
            if s.alive and s.time_to_idle and not s.keepers and idle > s.time_to_idle:
                s.alive = False  # SessionCache: past timeToIdle the session is removed
            if s.alive:
                s.last_access = self.now()
            return s.alive

    def live_session(self, key: str) -> SessionRow | None:
        s = self.sessions.get(key)
        return s if s is not None and self.touch(s) else None

    # -- groups of a call -----------------------------------------------------------------------

    def groups_in_scope(self, user: User, ctx: dict | None, *, writing: bool = False) -> list[int]:
        """The groups a call acts in; raises like OMERO for a non-member or a write to all groups."""
        value = (ctx or {}).get("omero.group")
        if value is None:
            return [user.groups[0]]
        gid = int(value)
        if gid == -1:
            if writing:
                raise omero.SecurityViolation(None, None, "Cannot write with omero.group=-1")
            return list(user.groups)
        if gid not in user.groups and not user.admin:
            raise omero.SecurityViolation(None, None, f"User {user.id} is not a member of group {gid}")
        return [gid]

    # -- transactions ---------------------------------------------------------------------------

    def allocate(self) -> int:
        with self.lock:
            return next(self._ids)

    def commit(self, rows: list[Row]) -> None:
        """Make rows visible, after a random delay like a transaction's: concurrent creates interleave."""
        if self.commit_jitter:
            with self.lock:
                delay = self._random.uniform(0, self.commit_jitter)
            time.sleep(delay)
        with self.lock:
            for row in rows:
                self.rows[row.id] = row

    def select(self, kind: str, groups: list[int] | None = None, **where) -> list[Row]:
        with self.lock:
            rows = [r for r in self.rows.values() if r.kind == kind and (groups is None or r.group in groups)]
        return sorted((r for r in rows if all(r.fields.get(k) == v for k, v in where.items())), key=lambda r: r.id)

    def delete(self, row_id: int) -> None:
        with self.lock:
            del self.rows[row_id]

    def count(self, kind: str, **where) -> int:
        return len(self.select(kind, **where))
