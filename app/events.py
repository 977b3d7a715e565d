"""Live job events: one thread per web process reads new JobEvent rows and hands each to the open
streams of its owner (and of staff), so a hundred open streams cost one query per tick, not a hundred.

Ids come from the database in insert order, but two transactions can commit out of that order, so
a row with a smaller id may appear later. The hub keeps a *complete cursor*: every event at or
below it has been seen (or its id was never used: a gap still empty after GAP_GRACE seconds). The
SSE `id:` of each message is that cursor as it was when the hub handed the event out (or, for a
replay, when the stream began), never more, so a client that reconnects with Last-Event-ID is
replayed everything it may have missed; it drops the repeats by event id.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from app.core.db import Database
from app.core.models import JobEvent

log = logging.getLogger(__name__)

GAP_GRACE = 30.0
POLL_SECONDS = 0.05
START_WINDOW = 1000  # ids a starting hub treats as maybe not complete


class Subscription:
    def __init__(self, owner_id: int | None):
        self.owner_id = owner_id  # None: every user's events (staff)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()  # (event id, data, SSE id to send with it)
        self.cursor = 0  # the hub's complete cursor when this subscription began


class EventHub:
    def __init__(self, db: Database, poll_seconds: float = POLL_SECONDS):
        self.db = db
        self.poll_seconds = poll_seconds
        self._subscriptions: set[Subscription] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.cursor = 0  # complete cursor
        self._seen: set[int] = set()  # ids above the cursor already dispatched
        self._gaps: dict[int, float] = {}  # unseen ids above the cursor -> when first missed

    def subscribe(self, owner_id: int | None) -> Subscription:
        subscription = Subscription(owner_id)
        with self._lock:
            self._subscriptions.add(subscription)
            if self._thread is None:
                # The newest ids are seen (a replay reads them), but not complete: a lower id may still
                # be committing. Start the cursor below them, so such an event is still dispatched.
                with self.db.session() as session:
                    newest = session.scalars(
                        select(JobEvent.id).order_by(JobEvent.id.desc()).limit(START_WINDOW)).all()
                self.cursor = min(newest) - 1 if newest else 0
                self._seen = set(newest)
                self._thread = threading.Thread(target=self._run, name="event-hub", daemon=True)
                self._thread.start()
            # every event at or below it was committed before this moment, so a replay read from
            # now on holds it
            subscription.cursor = self.cursor
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self.poll_seconds):
            try:
                self.poll()
            except SQLAlchemyError:  # the database restarts: keep the streams, try again shortly
                self._stopped.wait(1)
            except Exception:  # never let one bad row end every stream's live updates
                log.exception("the event hub failed to poll; trying again")
                self._stopped.wait(1)

    def poll(self) -> None:
        with self.db.session() as session:
            rows = session.execute(
                select(JobEvent.id, JobEvent.owner_id, JobEvent.data)
                .where(JobEvent.id > self.cursor).order_by(JobEvent.id).limit(2000)
            ).all()
        now = time.monotonic()
        fresh = [row for row in rows if row.id not in self._seen]
        for row in fresh:
            self._seen.add(row.id)
            self._gaps.pop(row.id, None)
        top = max(self._seen, default=self.cursor)
        for missing in range(self.cursor + 1, top):
            if missing not in self._seen:
                self._gaps.setdefault(missing, now)
        while self.cursor + 1 in self._seen or now - self._gaps.get(self.cursor + 1, now) > GAP_GRACE:
            self.cursor += 1
            self._seen.discard(self.cursor)
            self._gaps.pop(self.cursor, None)
        if fresh:
            with self._lock:
                subscriptions = list(self._subscriptions)
            for row in fresh:
                # Each event travels with its own SSE id: the cursor, but not past the event itself.
                # A stream may send it well after the hub moved on; the hub's cursor by then can
                # cover an event committed late and still waiting behind this one in the queue,
                # and a client reconnecting after that id would never get it.
                for sub in subscriptions:
                    if sub.owner_id is None or sub.owner_id == row.owner_id:
                        sub.queue.put((row.id, row.data, min(row.id, self.cursor)))


def stream(hub: EventHub, owner_id: int | None, after: int, heartbeat: float) -> Iterator[str]:
    """SSE text for one client: its events after `after`, then live ones, with heartbeats."""
    subscription = hub.subscribe(owner_id)  # before the replay, so nothing falls between the two
    sent: set[int] = set()
    try:
        yield "retry: 2000\n\n"
        query = select(JobEvent.id, JobEvent.data).where(JobEvent.id > after).order_by(JobEvent.id)
        if owner_id is not None:
            query = query.where(JobEvent.owner_id == owner_id)
        with hub.db.session() as session:
            for event_id, data in session.execute(query.execution_options(yield_per=500)):
                sent.add(event_id)
                # not the hub's cursor now: it may cover an event committed after this replay's
                # query, which only the queue brings, after the replay
                yield _message(event_id, data, min(event_id, subscription.cursor))
        while True:
            try:
                event_id, data, cursor = subscription.queue.get(timeout=heartbeat)
            except queue.Empty:
                yield ": heartbeat\n\n"
                continue
            if event_id <= after or event_id in sent:
                continue
            yield _message(event_id, data, cursor)
    finally:
        hub.unsubscribe(subscription)


def _message(event_id: int, job: dict, cursor: int) -> str:
    payload = json.dumps({"event_id": event_id, "job": job}, separators=(",", ":"))
    return f"id: {cursor}\nevent: job\ndata: {payload}\n\n"


def sse_response(owner_id: int | None):
    """The SSE response for one client: after Last-Event-ID (a reconnect) or ?after= (a first load)."""
    from flask import Response, current_app, request

    after = request.headers.get("Last-Event-ID", type=int)
    if after is None:
        after = request.args.get("after", default=0, type=int)
    body = stream(current_app.extensions["events"], owner_id, after, current_app.config["SSE_HEARTBEAT"])
    return Response(body, mimetype="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
