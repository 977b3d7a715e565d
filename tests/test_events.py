"""Live events: the user's own only, replayed from Last-Event-ID, complete when commits race."""
import json
import time

import pytest
import sqlalchemy as sa

from app import events as events_module
from app.core.models import JobEvent
from app.events import EventHub
from tests.helpers import Portal, ome_tiff
from tests.sse_clients import read_stream


def test_a_stream_carries_only_its_users_events_and_replays_after_last_event_id(app):
    alice, bob = Portal(app.test_client(), "alice"), Portal(app.test_client(), "bob")
    a = alice.new_batch({"a.tif": b"1", "b.tif": b"2"})
    theirs_batch = bob.new_batch({"secret.tif": b"3"})
    mine = read_stream(alice.client, "/api/events?after=0")
    assert sorted(m["job"]["id"] for _, m in mine) == sorted(j["id"] for j in a["jobs"])
    assert all(m["job"]["batch_id"] == a["id"] for _, m in mine)
    last_id = mine[0][0]
    replay = read_stream(alice.client, "/api/events", headers={"Last-Event-ID": str(last_id)})
    assert [m["event_id"] for _, m in replay] == [m["event_id"] for _, m in mine if m["event_id"] > last_id]
    theirs = read_stream(bob.client, "/api/events?after=0")
    assert {m["job"]["batch_id"] for _, m in theirs} == {theirs_batch["id"]}


def test_live_events_reach_the_stream_as_jobs_change(embedded_app):
    alice = Portal(embedded_app.test_client(), "alice")
    batch = alice.new_batch({"a.ome.tif": ome_tiff(seed=1)})
    response = alice.client.get(f"/api/events?after={batch['cursor']}", buffered=False)
    chunks = iter(response.response)
    next(chunks)  # retry: hint
    job_id = batch["jobs"][0]["id"]
    assert alice.post(f"/api/jobs/{job_id}/cancel").status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = next(chunks)
        text = text.decode() if isinstance(text, bytes) else text
        if "cancelled" in text:
            break
    else:
        pytest.fail("the cancel never reached the stream")
    response.close()


def alices_job(app) -> tuple[int, int]:
    """A job to hang hand-made events on: (its id, its owner's id)."""
    job_id = Portal(app.test_client(), "alice").new_batch({"a.tif": b"1"})["jobs"][0]["id"]
    with app.extensions["services"].db.session() as s:
        return job_id, s.scalar(sa.select(JobEvent.owner_id))


def slow_then_fast(db, job_id: int, owner: int):
    """Two workers committing out of order: "slow" takes the next id but has not committed when
    "fast", with the id after it, commits. Returns slow's open session: commit it to finish."""
    slow = db.Session()
    slow.add(JobEvent(job_id=job_id, owner_id=owner, data={"n": "slow"}))
    slow.flush()
    with db.session() as fast:
        fast.add(JobEvent(job_id=job_id, owner_id=owner, data={"n": "fast"}))
        fast.commit()
    return slow


def hand_driven_hub(db, owner: int):
    """A hub whose poll() the test calls, settled past the events that were in when it started."""
    hub = EventHub(db)
    subscription = hub.subscribe(owner)
    hub.stop()
    hub.poll()
    return hub, subscription


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_an_event_committed_after_a_later_one_is_still_delivered_and_the_cursor_waits(app):
    job_id, owner = alices_job(app)
    db = app.extensions["services"].db
    hub, sub = hand_driven_hub(db, owner)
    start = hub.cursor
    slow = slow_then_fast(db, job_id, owner)
    hub.poll()
    assert sub.queue.get_nowait()[1] == {"n": "fast"}
    assert hub.cursor == start  # the slow id is a gap: a reconnect must replay from before it
    slow.commit()
    slow.close()
    hub.poll()
    assert sub.queue.get_nowait()[1] == {"n": "slow"}
    assert hub.cursor == start + 2


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_an_event_still_committing_when_the_hub_starts_is_dispatched(app):
    """A web process starting while a worker commits: the newest id the new hub sees is not proof
    that every lower id is in."""
    job_id, owner = alices_job(app)
    db = app.extensions["services"].db
    slow = slow_then_fast(db, job_id, owner)
    hub, sub = hand_driven_hub(db, owner)  # it starts with "fast" as the newest id it sees
    slow.commit()
    slow.close()
    hub.poll()
    assert sub.queue.get_nowait()[1] == {"n": "slow"}


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_a_rolled_back_id_stops_holding_the_cursor_after_the_grace_time(app, monkeypatch):
    job_id, owner = alices_job(app)
    db = app.extensions["services"].db
    hub, _ = hand_driven_hub(db, owner)
    start = hub.cursor
    with db.session() as lost:
        lost.add(JobEvent(job_id=job_id, owner_id=owner, data={}))
        lost.flush()
        lost.rollback()
    with db.session() as s:
        s.add(JobEvent(job_id=job_id, owner_id=owner, data={}))
        s.commit()
    hub.poll()
    assert hub.cursor == start
    monkeypatch.setattr(events_module, "GAP_GRACE", 0.0)
    time.sleep(0.01)
    hub.poll()
    assert hub.cursor == start + 2


def sse_message(text: str) -> tuple[int, int]:
    """(the message's id:, its event id) from one SSE message."""
    lines = dict(line.split(": ", 1) for line in text.strip().split("\n"))
    return int(lines["id"]), json.loads(lines["data"])["event_id"]


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_no_message_id_passes_an_event_the_stream_has_not_sent_yet(app):
    """A stream that lags behind the hub (a busy client) must not send, with an earlier event, a cursor
    that covers a later-committed one still waiting in its queue: a reconnect then would skip it."""
    job_id, owner = alices_job(app)
    db = app.extensions["services"].db
    hub, _ = hand_driven_hub(db, owner)
    live = events_module.stream(hub, owner, after=hub.cursor, heartbeat=0.01)
    assert next(live).startswith("retry:")
    assert next(live) == ": heartbeat\n\n"  # nothing to replay: the stream now waits for live events

    def race(meanwhile):
        slow = slow_then_fast(db, job_id, owner)
        hub.poll()  # dispatches "fast"
        meanwhile()
        slow.commit()
        slow.close()
        hub.poll()  # dispatches "slow" and moves the cursor past both

    race(meanwhile=lambda: None)  # the live stream has not sent "fast" yet
    (first_cursor, first), (_, second) = sse_message(next(live)), sse_message(next(live))
    assert first > second  # "fast" was sent first
    assert first_cursor < second, "the cursor sent with 'fast' covers 'slow', not sent yet"

    with db.session() as s:  # an event for the next stream's replay to begin with
        s.add(JobEvent(job_id=job_id, owner_id=owner, data={"n": "before"}))
        s.commit()
    hub.poll()
    replaying = events_module.stream(hub, owner, after=first, heartbeat=0.01)
    messages = []

    def replay_begins():
        assert next(replaying).startswith("retry:")
        messages.append(sse_message(next(replaying)))  # the replay query ran: it holds "fast", not "slow"

    race(meanwhile=replay_begins)
    messages += [sse_message(next(replaying)) for _ in range(2)]  # "fast" from the replay, "slow" live
    delivered = set()
    for cursor, event_id in messages:
        delivered.add(event_id)
        assert all(e in delivered for e in range(first + 1, cursor + 1)), (messages, "a cursor passed an unsent event")
