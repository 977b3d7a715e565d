"""Fixtures: a portal stack (embedded defaults, or PostgreSQL + Redis), its app, clients and workers."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.browser_helpers import CHROMIUM, CHROMIUM_FLAGS
from tests.helpers import (
    IN_CI, POSTGRES, REDIS, Portal, Process, clean_postgres, close_app, free_port, make_app, service_missing,
    start_served, wait_for_port,
)
from tests.omero.requirements import require_omero_py


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
        clean_postgres(url)
        import redis

        redis.Redis.from_url(broker).flushdb()
        env.update(PORTAL_DATABASE_URL=url, PORTAL_BROKER_URL=broker)
    return env


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


@pytest.fixture
def configured_app(embedded_stack, monkeypatch):
    """Embedded portals with settings of the test's own: configured_app(PORTAL_X="1", ...)."""
    apps = []

    def make(**settings):
        apps.append(make_app(embedded_stack | settings, monkeypatch))
        return apps[-1]

    yield make
    for app in apps:
        close_app(app)


@pytest.fixture
def portal(app):
    """Sign in as a named user on the test app: portal('alice')."""
    return lambda username: Portal(app.test_client(), username)


@pytest.fixture
def worker(stack, tmp_path):
    """A real Celery worker process on the stack; call .start() (again after a kill)."""
    process = Process(["worker"], stack, tmp_path / "worker.log")
    yield process
    process.stop()


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


@pytest.fixture
def served(embedded_stack, tmp_path):
    """`upload-portal serve` (web and worker) on embedded defaults, as a newcomer runs it; its URL."""
    url, process = start_served(embedded_stack, tmp_path)
    yield url
    process.stop()


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small disk: tmpfs("24m") gives its path; unmounted afterwards whatever happens."""
    import subprocess

    mounts = []

    def mount(size: str) -> Path:
        path = tmp_path / f"disk{len(mounts)}"
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            message = f"cannot mount a small disk here: {done.stderr.strip()}"
            if IN_CI:
                pytest.fail(message + ": CI must allow it (run as root)")
            pytest.skip(message)
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


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


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if IN_CI:
            pytest.fail("chromium is not installed: CI must have it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def served_without_worker(embedded_stack, tmp_path):
    """Jobs stay queued: what a busy facility looks like."""
    url, process = start_served(embedded_stack, tmp_path, "--no-worker")
    yield url
    process.stop()


@pytest.fixture
def fake_omero():
    """A fake OMERO server with a group "Lab", users alice and bob in it, and an admin "root"."""
    require_omero_py()
    from tests.omero.fake_omero import FakeOmero

    server = FakeOmero(commit_jitter=0.005)
    lab = server.store.add_group("Lab")
    server.store.add_user("alice", [lab], first="Alice", last="Liddell")
    server.store.add_user("bob", [lab])
    server.store.add_user("root", [], password="rootpw", admin=True)
    yield server
    server.close()


@pytest.fixture
def omero_gateway(fake_omero):
    """The real adapter, talking to the fake server."""
    from app.core.omero.omeropy import OmeroPyGateway

    return OmeroPyGateway(
        "omero.example.org", 4064, "https://omero.example.org/", admin_user="root", admin_password="rootpw",
        client_factory=fake_omero.client_factory, settle_seconds=0.05, import_timeout_seconds=5,
        poll_seconds=0.05,
    )


@pytest.fixture
def smtp():
    """A real SMTP server process (aiosmtpd, in a thread) that keeps what it receives: (controller, inbox)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    class Inbox(Message):
        def __init__(self):
            super().__init__()
            self.messages = []

        def handle_message(self, message):
            self.messages.append(message)

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()
