"""Fixtures: a portal stack (embedded defaults, or PostgreSQL + Redis), its app, clients and workers."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT.parent / "shared" / "samples"
IN_CI = os.environ.get("CI") == "true"
POSTGRES = os.environ.get("PORTAL_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("PORTAL_TEST_REDIS", "redis://127.0.0.1:6379/9")


def service_missing(what: str, error: Exception):
    """In CI a missing service is a failure; on a laptop the test says why it did not run."""
    message = f"{what} is not reachable ({error})"
    if IN_CI:
        pytest.fail(message + ": CI must have it")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url():
    import sqlalchemy as sa

    name = f"portal_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text(f"CREATE DATABASE {name}"))
    except sa.exc.OperationalError as e:
        service_missing("PostgreSQL", e)
    yield POSTGRES.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as c:
        c.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url():
    import redis

    try:
        client = redis.Redis.from_url(REDIS)
        client.ping()
    except redis.exceptions.ConnectionError as e:
        service_missing("Redis", e)
    client.flushdb()
    yield REDIS
    client.flushdb()


def _clean_postgres(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture
def embedded_stack(tmp_path):
    """Environment for one portal on embedded defaults, with short leases for quick recovery."""
    return {"PORTAL_MODE": "embedded", "PORTAL_DATA_DIR": str(tmp_path / "data"), "PORTAL_JOB_LEASE_SECONDS": "3",
            "PORTAL_SSE_HEARTBEAT": "1", "PORTAL_STAGING_RESERVE": "0"}


@pytest.fixture(params=["embedded", "services"])
def stack(request, embedded_stack):
    """Environment for one portal: embedded defaults, or PostgreSQL + Redis. Migrated, empty."""
    env = dict(embedded_stack)
    if request.param == "services":
        url, broker = request.getfixturevalue("postgres_url"), request.getfixturevalue("redis_url")
        _clean_postgres(url)
        import redis

        redis.Redis.from_url(broker).flushdb()
        env.update(PORTAL_DATABASE_URL=url, PORTAL_BROKER_URL=broker)
    return env


def make_app(env: dict, monkeypatch):
    from app import config, create_app
    from app.db import Database

    for name in [n for n in os.environ if n.startswith("PORTAL_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    migrations = Database(config.load()["DATABASE_URL"])
    migrations.upgrade()
    migrations.dispose()
    return create_app()


def close_app(app) -> None:
    app.extensions["events"].stop()
    app.extensions["db"].dispose()


@pytest.fixture
def app(stack, monkeypatch):
    app = make_app(stack, monkeypatch)
    yield app
    close_app(app)


@pytest.fixture
def embedded_app(embedded_stack, monkeypatch):
    app = make_app(embedded_stack, monkeypatch)
    yield app
    close_app(app)


class Portal:
    """A browser-like client of one user: signs in, keeps the CSRF token, speaks the JSON API."""

    def __init__(self, client, username: str):
        self.client = client
        page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        response = client.post("/login", data={"username": username, "csrf_token": token})
        assert response.status_code == 302, response.get_data(as_text=True)
        self.me = client.get("/api/me").get_json()
        self.headers = {"X-CSRFToken": self.me["csrf_token"]}

    def get(self, url, **kw):
        return self.client.get(url, **kw)

    def post(self, url, **kw):
        return self.client.post(url, headers=self.headers, **kw)

    def put(self, url, **kw):
        return self.client.put(url, headers=self.headers, **kw)

    def new_batch(self, files: dict[str, bytes], **fields):
        body = {"group_id": self.me["groups"][0]["id"], "files": [{"name": n, "size": len(b)} for n, b in files.items()]}
        body.update(fields)
        response = self.post("/api/batches", json=body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def send(self, files: dict[str, bytes], **fields):
        """Create a batch and send every file whole; return the batch as created."""
        import hashlib

        batch = self.new_batch(files, **fields)
        for job in batch["jobs"]:
            for f in job["files"] if job["state"] == "uploading" else []:
                data = files[f["name"]]
                for offset in range(0, len(data), 32 << 20):
                    sent = self.put(f"/api/files/{f['id']}?offset={offset}", data=data[offset:offset + (32 << 20)])
                    assert sent.status_code == 200, sent.get_json()
                done = self.post(f"/api/files/{f['id']}/complete", json={"sha1": hashlib.sha1(data).hexdigest()})
                assert done.status_code == 200, done.get_json()
        return batch

    def batch(self, batch_id):
        return self.get(f"/api/batches/{batch_id}").get_json()


@pytest.fixture
def portal(app):
    """Sign in as a named user on the test app: portal('alice')."""
    return lambda username: Portal(app.test_client(), username)


def ome_tiff(shape=(4, 5), seed=0, microscope: str | None = None, acquired: str | None = None) -> bytes:
    """A real OME-TIFF of random pixels (seed makes the content unique)."""
    import io

    import numpy as np
    import tifffile

    pixels = np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, ome=True, metadata={"axes": "YX"})
    data = buffer.getvalue()
    if microscope or acquired:
        # tifffile writes no Instrument or AcquisitionDate: add them to its OME-XML (same length kept
        # by rewriting the description tag through tifffile itself)
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            xml = tif.ome_metadata
        from xml.sax.saxutils import quoteattr

        extra = f'<Instrument ID="Instrument:0"><Microscope Model={quoteattr(microscope)}/></Instrument>' if microscope else ""
        xml = xml.replace("<Image ", extra + "<Image ", 1)
        if acquired:
            xml = re.sub(r"(<Image [^>]*>)", rf"\1<AcquisitionDate>{acquired}</AcquisitionDate>", xml, count=1)
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, pixels, description=xml.encode(), metadata=None)
        data = buffer.getvalue()
    return data


class Process:
    """A portal process (web or worker) started from the command line with the stack's environment."""

    def __init__(self, args: list[str], env: dict, log: Path):
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")} | self.env
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", *self.args], env=environ,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def worker(stack, tmp_path):
    """A real Celery worker process on the stack; call .start() (again after a kill)."""
    process = Process(["worker"], stack, tmp_path / "worker.log")
    yield process
    process.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(stack, tmp_path):
    """`upload-portal serve --no-worker` on a free port; yields its base URL."""
    port = free_port()
    env = stack | {"PORTAL_PORT": str(port), "PORTAL_WEB_THREADS": "160"}
    process = Process(["serve", "--no-worker"], env, tmp_path / "web.log").start()
    url = f"http://127.0.0.1:{port}"
    wait_for_port(port, process)
    yield url
    process.stop()


def start_served(stack: dict, tmp_path: Path, *args: str) -> tuple[str, Process]:
    """`upload-portal serve [args]` on a free port; its URL and process."""
    port = free_port()
    process = Process(["serve", *args], stack | {"PORTAL_PORT": str(port)}, tmp_path / "serve.log").start()
    wait_for_port(port, process, timeout=60)
    return f"http://127.0.0.1:{port}", process


@pytest.fixture
def served(embedded_stack, tmp_path):
    """`upload-portal serve` (web and worker) on embedded defaults, as a newcomer runs it; its URL."""
    url, process = start_served(embedded_stack, tmp_path)
    yield url
    process.stop()


def wait_for_port(port: int, process: Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(f"the process exited: {process.log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}: {process.log.read_text()[-3000:]}")


def wait_until(predicate, timeout: float = 60, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test shows the end of each process log it wrote (serve.log, worker.log...): in CI
    that is all there is to read afterwards."""
    report = yield
    tmp = item.funcargs.get("tmp_path") if hasattr(item, "funcargs") else None
    if report.failed and tmp is not None:
        for log in sorted(Path(tmp).rglob("*.log")):
            report.sections.append((f"end of {log.name}", log.read_text(errors="replace")[-6000:]))
    browser = item.funcargs.get("browser") if report.failed and hasattr(item, "funcargs") else None
    for page in [page for context in getattr(browser, "contexts", []) for page in context.pages]:
        report.sections.append((f"page {page.url}", page.inner_text("body")[-3000:]))  # what the user saw
    return report
