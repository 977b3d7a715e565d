"""A hundred open live-status streams on the real server: each gets its own user's events, all of them."""
import pytest

from tests.helpers import wait_until
from tests.sse_clients import StreamReader, signed_in


@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_a_hundred_streams_of_ten_users_each_get_exactly_their_events(live_server):
    users = [signed_in(live_server, f"user{i}") for i in range(10)]
    readers = []
    for session, _me in users:
        for _ in range(10):
            reader = StreamReader(session, live_server + "/api/events?after=0")
            reader.start()
            readers.append(reader)
    for reader in readers:
        assert reader.ready.wait(30)
    jobs = {}
    for i, (session, me) in enumerate(users):
        batch = session.post(live_server + "/api/batches", json={
            "group_id": me["groups"][0]["id"], "files": [{"name": f"u{i}.tif", "size": 10}]}).json()
        jobs[me["username"]] = batch["jobs"][0]["id"]
        session.post(f"{live_server}/api/jobs/{batch['jobs'][0]['id']}/cancel")
    expected = {me["username"]: {jobs[me["username"]]} for _, me in users}
    wait_until(lambda: all(len(r.events) >= 2 for r in readers), timeout=30, what="every stream's two events")
    for n, reader in enumerate(readers):
        owner = users[n // 10][1]["username"]
        assert {e["job"]["id"] for _, e in reader.events} == expected[owner]
        assert [e["job"]["state"] for _, e in reader.events] == ["uploading", "cancelled"]
    for reader in readers:
        reader.stop = True
