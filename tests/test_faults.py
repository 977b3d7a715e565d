"""Fault injection on the real pipeline: workers killed mid-conversion and mid-import again and again,
the broker and the database restarted mid-batch, the web killed mid-transfer, the staging disk full.
Every job must end imported, exactly once, and no byte may be lost or sent twice."""
import glob
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.client import sha1_of
from app.core.models import Job, JobEvent
from app.core.omero.embedded import EmbeddedGateway
from tests.helpers import IN_CI, SAMPLES, Portal, Process, free_port, ome_tiff, start_served, wait_for_port, wait_until
from tests.sse_clients import signed_in

pytestmark = pytest.mark.slow


def newest_state_event(app, after: int, state: str) -> int | None:
    """The id of the first event after `after` that moves a job into `state` (a fresh transition)."""
    with app.extensions["services"].db.session() as db:
        for event_id, data in db.execute(sa.select(JobEvent.id, JobEvent.data).where(JobEvent.id > after)
                                         .order_by(JobEvent.id)):
            if data["state"] == state and data["progress"] == 0.0:
                return event_id
    return None


def last_event(app) -> int:
    with app.extensions["services"].db.session() as db:
        return db.scalar(sa.select(sa.func.max(JobEvent.id))) or 0


def states(app, ids):
    with app.extensions["services"].db.session() as db:
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
    images = app.extensions["services"].omero.images_of("alice")
    assert sorted(image["name"] for image in images) == sorted(files)  # once each, none lost, none twice
    with app.extensions["services"].db.session() as db:
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


@pytest.mark.parametrize("restore_fails", [False, True], ids=["clean", "kombu-restore-fails"])
def test_a_broker_restarted_mid_batch_loses_no_job(postgres_url, private_redis, tmp_path, monkeypatch, restore_fails):
    from tests.helpers import clean_postgres, close_app, make_app

    clean_postgres(postgres_url)
    env = {"PORTAL_MODE": "embedded", "PORTAL_DATA_DIR": str(tmp_path / "data"), "PORTAL_JOB_LEASE_SECONDS": "3",
           "PORTAL_SSE_HEARTBEAT": "1", "PORTAL_STAGING_RESERVE": "0", "PORTAL_DATABASE_URL": postgres_url,
           "PORTAL_BROKER_URL": private_redis.url}
    if restore_fails:  # kombu's restore breaks, Celery gives up: the worker must start afresh
        env["PYTHONPATH"] = str(Path(__file__).parent / "fault_injection")
    app = make_app(env, monkeypatch)
    worker = Process(["worker"], env, tmp_path / "worker.log")
    try:
        alice = Portal(app.test_client(), "alice")
        files = {f"{i}.ome.tif": ome_tiff((1024, 2048), seed=200 + i) for i in range(50)}
        ids = [job["id"] for job in alice.send(files)["jobs"]]
        worker.start()
        wait_until(lambda: "imported" in states(app, ids).values(), timeout=120, what="the first import")
        # restart while jobs run: their messages are unacknowledged (acks_late), the hard case
        wait_until(lambda: {"converting", "importing"} & set(states(app, ids).values()), timeout=120,
                   interval=0.005, what="a job in progress")
        private_redis.restart()
        wait_until(lambda: set(states(app, ids).values()) == {"imported"}, timeout=300, interval=0.5,
                   what="all 50 jobs after the broker restart")
        assert len(app.extensions["services"].omero.images_of("alice")) == 50
        if restore_fails:
            log = (tmp_path / "worker.log").read_text(errors="replace")
            assert "Unrecoverable error" in log and "restart 1 in" in log, "the fault was not injected"
    finally:
        worker.stop()
        close_app(app)


def big_ome_tiff(path: Path, mib: int, seed: int) -> None:
    """An OME-TIFF of about `mib` MiB of random pixels, written straight to disk."""
    import numpy as np
    import tifffile

    pixels = np.random.default_rng(seed).integers(0, 255, (mib * 64, 16384), dtype=np.uint8)
    tifffile.imwrite(path, pixels, ome=True, metadata={"axes": "YX"})


def accepted_puts(log_text: str, file_id: int) -> list[int]:
    """Offsets of the PUTs of this file the server answered 200 (gunicorn's access log)."""
    return [int(offset) for offset in re.findall(rf'"PUT /api/files/{file_id}\?offset=(\d+) HTTP/1.1" 200 ', log_text)]


def store_images(data_dir: Path, username: str) -> list[dict]:
    return EmbeddedGateway(data_dir / "omero-store").images_of(username)


def test_a_web_process_killed_mid_transfer_is_resumed_from_the_bytes_it_held(embedded_stack, tmp_path):
    source = tmp_path / "big.ome.tif"
    big_ome_tiff(source, 192, seed=1)
    size = source.stat().st_size
    port = free_port()  # fixed: the restarted web must answer where the client left off
    web = Process(["serve", "--no-worker"], embedded_stack | {"PORTAL_PORT": str(port)}, tmp_path / "web1.log").start()
    worker = Process(["worker"], embedded_stack, tmp_path / "worker.log")
    push = None
    try:
        wait_for_port(port, web, timeout=60)
        worker.start()
        url = f"http://127.0.0.1:{port}"
        session, _ = signed_in(url, "alice")
        token = session.post(url + "/api/tokens", json={"name": "microscope PC"}).json()["token"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")} | {"PORTAL_TOKEN": token}
        push = subprocess.Popen([sys.executable, "-m", "app.cli", "push", str(source), "--server", url, "--json"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        staged = lambda: next((tmp_path / "data" / "staging").glob("*/big.ome.tif"), None)  # noqa: E731
        # kill once the server holds some bytes but most are still to come
        wait_until(lambda: (path := staged()) and path.stat().st_size >= 8 << 20, timeout=120, interval=0.002,
                   what="the first bytes on the server")
        web.kill()
        held = staged().stat().st_size
        assert 0 < held < size, f"the web was killed too late: it held {held} of {size} bytes"
        web.log = tmp_path / "web2.log"
        web.start()  # on the same port
        wait_for_port(port, web, timeout=60)
        out, err = push.communicate(timeout=300)
        assert push.returncode == 0, err
        (job,) = [json.loads(line) for line in out.splitlines()]
        assert job["state"] == "imported", job
        assert "trying again" in err  # the client saw the server go, and said so
    finally:
        if push and push.poll() is None:
            push.kill()
        worker.stop()
        web.stop()
    after = (tmp_path / "web2.log").read_text()
    (file_id,) = set(re.findall(r'"PUT /api/files/(\d+)\?', after))
    # the restarted server took the rest from exactly what it held when it died, never from zero, and
    # each offset once. The access log is no record of order: with chunks in flight, gunicorn's workers
    # log each when it ends, so a later chunk can be listed first. What the server holds is the proof.
    resumed = accepted_puts(after, int(file_id))
    assert resumed and min(resumed) == held and len(set(resumed)) == len(resumed), (held, resumed)
    (image,) = store_images(tmp_path / "data", "alice")
    assert image["name"] == "big.ome.tif" and image["sha1"] == sha1_of(source)


def postgres_program(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@pytest.fixture
def private_postgres():
    """A PostgreSQL of this test's own, to restart at will (never the shared one other tests use)."""
    initdb, pg_ctl = postgres_program("initdb"), postgres_program("pg_ctl")
    if not (initdb and pg_ctl):
        message = "PostgreSQL's initdb and pg_ctl are needed for the database restart test"
        if IN_CI:
            pytest.fail(message + ": CI must have them")
        pytest.skip(message)
    home = Path(tempfile.mkdtemp(prefix="portal-pg-"))  # not under tmp_path: the postgres user must reach it
    owner = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(home, "postgres")
        owner = ["runuser", "-u", "postgres", "--"]
    port, data = free_port(), home / "data"

    def run(*args: str) -> None:
        done = subprocess.run([*owner, *args], cwd=home, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"

    class Server:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

        def pg_ctl(self, *args: str) -> None:
            run(pg_ctl, "-D", str(data), "-l", str(home / "server.log"), "-w", "-t", "60",
                "-o", f"-p {port} -k {home} -c listen_addresses=127.0.0.1", *args)

        def restart(self) -> None:
            self.pg_ctl("stop", "-m", "fast")  # as a service manager does: open connections are cut
            time.sleep(3)
            self.pg_ctl("start")

    run(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync")
    server = Server()
    server.pg_ctl("start")
    try:
        yield server
    finally:
        subprocess.run([*owner, pg_ctl, "-D", str(data), "stop", "-m", "immediate"], cwd=home, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def send_whole(session, url: str, remote: dict, data: bytes, chunk: int = 4 << 20) -> None:
    """Send one file through the API; every call must succeed the first time."""
    for offset in range(0, len(data), chunk):
        sent = session.put(f"{url}/api/files/{remote['id']}?offset={offset}", data=data[offset:offset + chunk],
                           headers={"Content-Type": "application/octet-stream"})
        assert sent.status_code == 200, sent.text
    done = session.post(f"{url}/api/files/{remote['id']}/complete", json={"sha1": hashlib.sha1(data).hexdigest()})
    assert done.status_code == 200, done.text


def new_batch(session, url: str, me: dict, files: dict[str, bytes]) -> dict:
    body = {"group_id": me["groups"][0]["id"], "files": [{"name": n, "size": len(b)} for n, b in files.items()]}
    created = session.post(url + "/api/batches", json=body)
    assert created.status_code == 201, created.text
    return created.json()


def job_states(session, url: str, batch_id: int) -> dict[int, str]:
    answer = session.get(f"{url}/api/batches/{batch_id}")
    assert answer.status_code == 200, answer.text
    return {job["id"]: job["state"] for job in answer.json()["jobs"]}


def test_a_postgresql_restart_mid_batch_loses_no_job_and_the_web_answers_again(private_postgres, private_redis,
                                                                                 tmp_path):
    env = {"PORTAL_MODE": "embedded", "PORTAL_DATA_DIR": str(tmp_path / "data"), "PORTAL_JOB_LEASE_SECONDS": "3",
           "PORTAL_STAGING_RESERVE": "0", "PORTAL_DATABASE_URL": private_postgres.url,
           "PORTAL_BROKER_URL": private_redis.url, "PORTAL_WORKER_CONCURRENCY": "1"}
    url, web = start_served(env, tmp_path, "--no-worker")  # embedded mode: serve migrates the database
    worker = Process(["worker"], env, tmp_path / "worker.log")
    try:
        worker.start()
        session, me = signed_in(url, "alice")
        files = {f"{i}.ome.tif": ome_tiff((512, 512), seed=400 + i) for i in range(20)}
        batch = new_batch(session, url, me, files)
        remotes = [(job["files"][0], files[job["files"][0]["name"]]) for job in batch["jobs"]]
        for remote, data in remotes[:12]:
            send_whole(session, url, remote, data)
        wait_until(lambda: "imported" in job_states(session, url, batch["id"]).values(), timeout=120,
                   what="the first import")
        at_restart = job_states(session, url, batch["id"])
        private_postgres.restart()
        unfinished = [i for i, state in at_restart.items() if state not in ("imported", "uploading")]
        assert unfinished, f"the worker finished before the restart, make the batch bigger: {at_restart}"
        # the web's pooled connections died with the server: the next calls must not be 500s
        for remote, data in remotes[12:]:
            send_whole(session, url, remote, data)
        wait_until(lambda: set(job_states(session, url, batch["id"]).values()) == {"imported"}, timeout=180,
                   interval=0.5, what="all 20 jobs imported after the restart")
        assert worker.proc.poll() is None  # the same worker kept working
    finally:
        worker.stop()
        web.stop()
    images = store_images(tmp_path / "data", "alice")
    assert sorted(image["name"] for image in images) == sorted(files)  # each once, none lost
    assert {image["name"]: image["sha1"] for image in images} == {n: hashlib.sha1(b).hexdigest() for n, b in files.items()}


@pytest.fixture
def small_disk(tmpfs):
    return tmpfs("24m")


def test_a_full_staging_disk_answers_507_keeps_what_it_holds_and_the_transfer_resumes(embedded_stack, small_disk,
                                                                                       tmp_path):
    env = embedded_stack | {"PORTAL_STAGING_DIR": str(small_disk), "PORTAL_STAGING_RESERVE": "0"}
    url, web = start_served(env, tmp_path, "--no-worker")
    worker = Process(["worker"], env, tmp_path / "worker.log")
    try:
        session, me = signed_in(url, "alice")
        small, big = ome_tiff(seed=500), ome_tiff((4096, 4096), seed=501)  # 16 MiB
        first = new_batch(session, url, me, {"small.ome.tif": small})
        send_whole(session, url, first["jobs"][0]["files"][0], small)  # staged, waiting for a worker
        second = new_batch(session, url, me, {"big.ome.tif": big})  # there is room for it now...
        remote = second["jobs"][0]["files"][0]
        filler = small_disk / "other-uploads"
        filler.write_bytes(os.urandom((10 << 20) + 12345))  # ...until other uploads take most of it
        chunk, offset, refused = 2 << 20, 0, None
        while offset < len(big):
            sent = session.put(f"{url}/api/files/{remote['id']}?offset={offset}", data=big[offset:offset + chunk],
                               headers={"Content-Type": "application/octet-stream"})
            if sent.status_code != 200:
                refused = sent
                break
            offset = sent.json()["received"]
        assert refused is not None, "the disk never filled"
        assert refused.status_code == 507 and "disk is full" in refused.json()["error"], refused.text
        held = session.get(f"{url}/api/files/{remote['id']}").json()["received"]
        on_disk = (small_disk / str(second["jobs"][0]["id"]) / "big.ome.tif").read_bytes()
        assert 0 < held < len(big) and len(on_disk) == held
        assert on_disk == big[:held]  # what the server says it holds is really there, intact

        filler.unlink()  # the space comes back
        while held < len(big):
            sent = session.put(f"{url}/api/files/{remote['id']}?offset={held}", data=big[held:held + chunk],
                               headers={"Content-Type": "application/octet-stream"})
            assert sent.status_code == 200, sent.text
            held = sent.json()["received"]
        done = session.post(f"{url}/api/files/{remote['id']}/complete", json={"sha1": hashlib.sha1(big).hexdigest()})
        assert done.status_code == 200, done.text
        worker.start()
        for batch in (first, second):
            wait_until(lambda: set(job_states(session, url, batch["id"]).values()) == {"imported"}, timeout=120,
                       interval=0.5, what=f"batch {batch['id']} imported")
    finally:
        worker.stop()
        web.stop()
    images = {image["name"]: image["sha1"] for image in store_images(tmp_path / "data", "alice")}
    assert images == {"small.ome.tif": hashlib.sha1(small).hexdigest(), "big.ome.tif": hashlib.sha1(big).hexdigest()}
