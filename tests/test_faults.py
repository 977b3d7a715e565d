"""Fault injection on the real pipeline: workers killed mid-conversion and mid-import again and again,
and the broker restarted mid-batch. Every job must end imported, exactly once."""
import os
import random
import shutil
import signal
import subprocess
import time

import pytest
import sqlalchemy as sa

from app.models import Job, JobEvent
from tests.conftest import SAMPLES, Portal, Process, free_port, ome_tiff, wait_until

pytestmark = pytest.mark.slow


def newest_state_event(app, after: int, state: str) -> int | None:
    """The id of the first event after `after` that moves a job into `state` (a fresh transition)."""
    with app.extensions["db"].session() as db:
        for event_id, data in db.execute(sa.select(JobEvent.id, JobEvent.data).where(JobEvent.id > after)
                                         .order_by(JobEvent.id)):
            if data["state"] == state and data["progress"] == 0.0:
                return event_id
    return None


def last_event(app) -> int:
    with app.extensions["db"].session() as db:
        return db.scalar(sa.select(sa.func.max(JobEvent.id))) or 0


def states(app, ids):
    with app.extensions["db"].session() as db:
        return dict(db.execute(sa.select(Job.id, Job.state).where(Job.id.in_(ids))).all())


def unique_sem_tiff(seed: int) -> bytes:
    """A real Thermo SEM TIFF that converts, made unique by bytes after its last IFD (readers skip them)."""
    return (SAMPLES / "FEI-Helios-Ebeam-8bits.tif").read_bytes() + random.Random(seed).randbytes(16)


@pytest.mark.timeout(1200)  # 40 worker restarts
@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_twenty_kills_mid_conversion_and_twenty_mid_import_lose_nothing_and_import_once(app, worker, stack):
    worker.env = stack | {"PORTAL_JOB_MAX_ATTEMPTS": "1000", "PORTAL_WORKER_CONCURRENCY": "2"}
    alice = Portal(app.test_client(), "alice")
    files = {f"sem{i}.tif": unique_sem_tiff(i) for i in range(20)}
    files |= {f"big{i}.ome.tif": ome_tiff((4096, 8192), seed=100 + i) for i in range(20)}  # 32 MiB each
    ids = [job["id"] for job in alice.send(files)["jobs"]]
    kills = {"converting": 0, "importing": 0}
    while min(kills.values()) < 20:
        target = "converting" if kills["converting"] <= kills["importing"] else "importing"
        after = last_event(app)
        worker.start()
        wait_until(lambda: newest_state_event(app, after, target), timeout=120, interval=0.002,
                   what=f"a job to start {target} (all done before 20 kills of each kind? add jobs)")
        worker.kill()  # SIGKILL right as a job has begun this step
        kills[target] += 1
    assert kills == {"converting": 20, "importing": 20}, kills
    worker.start()
    wait_until(lambda: set(states(app, ids).values()) == {"imported"}, timeout=600, interval=0.5,
               what="every job to be imported")
    images = app.extensions["omero"].images_of("alice")
    assert sorted(image["name"] for image in images) == sorted(files)  # once each, none lost, none twice
    with app.extensions["db"].session() as db:
        attempts = db.scalars(sa.select(Job.attempts).where(Job.id.in_(ids))).all()
    assert sum(attempts) >= len(ids) + 20  # the kills really interrupted work


@pytest.fixture
def private_redis(tmp_path):
    """A Redis of this test's own (with its append-only file, as in production), to restart at will."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
               "--dir", str(tmp_path)]
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is needed for the broker restart test")

    class Server:
        url = f"redis://127.0.0.1:{port}/0"
        proc = None

        def start(self):
            self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_until(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout
                       .strip() == b"PONG", timeout=20, what="redis to start")

        def restart(self):
            os.kill(self.proc.pid, signal.SIGTERM)  # a clean restart, as a service manager does it
            self.proc.wait(timeout=30)
            time.sleep(1)
            self.start()

    server = Server()
    server.start()
    yield server
    server.proc.terminate()
    server.proc.wait(timeout=30)


def test_a_broker_restarted_mid_batch_loses_no_job(postgres_url, private_redis, tmp_path, monkeypatch):
    from tests.conftest import _clean_postgres, close_app, make_app

    _clean_postgres(postgres_url)
    env = {"PORTAL_MODE": "embedded", "PORTAL_DATA_DIR": str(tmp_path / "data"), "PORTAL_JOB_LEASE_SECONDS": "3",
           "PORTAL_SSE_HEARTBEAT": "1", "PORTAL_STAGING_RESERVE": "0", "PORTAL_DATABASE_URL": postgres_url,
           "PORTAL_BROKER_URL": private_redis.url}
    app = make_app(env, monkeypatch)
    worker = Process(["worker"], env, tmp_path / "worker.log")
    try:
        alice = Portal(app.test_client(), "alice")
        ids = [job["id"] for job in alice.send({f"{i}.ome.tif": ome_tiff(seed=200 + i) for i in range(50)})["jobs"]]
        worker.start()
        wait_until(lambda: "imported" in states(app, ids).values(), timeout=120, what="the first import")
        private_redis.restart()
        wait_until(lambda: set(states(app, ids).values()) == {"imported"}, timeout=300, interval=0.5,
                   what="all 50 jobs after the broker restart")
        assert len(app.extensions["omero"].images_of("alice")) == 50
    finally:
        worker.stop()
        close_app(app)
