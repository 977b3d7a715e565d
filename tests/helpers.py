"""Helpers the tests share (plain functions and classes; the fixtures are in conftest.py)."""
from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
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


def clean_postgres(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


def make_app(env: dict, monkeypatch):
    from app.core import config
    from app.core.db import Database
    from app.factory import create_app

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
    app.extensions["services"].db.dispose()


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

    def put(self, url, headers=None, **kw):
        return self.client.put(url, headers={**self.headers, **(headers or {})}, **kw)

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_served(stack: dict, tmp_path: Path, *args: str) -> tuple[str, Process]:
    """`upload-portal serve [args]` on a free port; its URL and process."""
    port = free_port()
    process = Process(["serve", *args], stack | {"PORTAL_PORT": str(port)}, tmp_path / "serve.log").start()
    wait_for_port(port, process, timeout=60)
    return f"http://127.0.0.1:{port}", process


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


OPEN_REDIRECTS = ["//evil.example/x", "https://evil.example", "/\\evil.example", "/\t/evil.example",
                  "/\n/evil.example", " //evil.example", "javascript:alert(1)", "https:evil.example", "\\\\evil.example"]


def make_staff(app, username):
    import sqlalchemy as sa

    from app.core.models import User

    with app.extensions["services"].db.session() as db:
        db.execute(sa.update(User).where(User.username == username).values(is_staff=True))
        db.commit()


def with_more(conversion, out):
    """The conversion with a second image and a spectrum's CSV and plot, as multi-signal files give."""
    from converters.base import Attachment, OutputImage

    second = out / "second.ome.tiff"
    second.write_bytes(ome_tiff(seed=42))
    csv, png = out / "EDS.csv", out / "EDS.png"
    csv.write_text("energy (keV),counts\n0.0,1\n0.01,5\n")
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))
    conversion.images.append(OutputImage(second, "HAADF", {"T": 1, "C": 1, "Z": 1, "Y": 4, "X": 5}, ["HAADF"], None))
    conversion.attachments += [Attachment(csv, "spectrum-csv", "EDS spectrum"), Attachment(png, "spectrum-plot", "EDS spectrum")]
    conversion.warnings.append("pixel size unknown for HAADF")
    return conversion


def data_file(tmp_path: Path, size: int, name: str = "grid.tif") -> tuple[Path, str]:
    path = tmp_path / name
    path.write_bytes(bytes(i % 251 for i in range(size)))
    return path, hashlib.sha1(path.read_bytes()).hexdigest()


def sign_in_with_key(app, key):
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    return client, client.post("/login", data={"omero_key": key, "csrf_token": token})


def sample(name: str) -> Path:
    path = SAMPLES / name
    if not path.is_file():
        pytest.fail(f"sample {name} is missing from {SAMPLES.resolve()}")
    return path


def job_row(app, job_id: int):
    from app.core.models import Job

    with app.extensions["services"].db.session() as db:
        return db.get(Job, job_id)


def run_job(app, job_id: int, worker: str = "w:1"):
    """Run one job through the pipeline in this process, as a worker would."""
    from workers import pipeline

    with app.app_context():
        return pipeline.run_job(app.extensions["services"], job_id, worker)


def costly_sem_tiff() -> bytes:
    """A valid Thermo/FEI SEM TIFF of 8000x8000 pixels in about 7 KB (zstd over a striped image, 64 MB
    of pixels: inside the decompression-bomb guard), genuinely slow and memory-hungry to convert."""
    import io

    import numpy as np
    import tifffile

    with tifffile.TiffFile(SAMPLES / "FEI-Helios-Ebeam-8bits.tif") as tif:
        tag = tif.pages.first.tags[34682]
        tif.filehandle.seek(tag.valueoffset)
        fei = tif.filehandle.read(tag.count).decode("ascii")
    pixels = np.zeros((8000, 8000), np.uint8)
    pixels[::64] = 200
    out = io.BytesIO()
    tifffile.imwrite(out, pixels, compression="zstd", rowsperstrip=8000, extratags=[(34682, 2, len(fei), fei, False)])
    assert len(out.getvalue()) < 16 << 10
    return out.getvalue()


def child_pids(parent: int | None = None) -> list[int]:
    """The processes whose parent is `parent` (this process by default), read from /proc."""
    parent = os.getpid() if parent is None else parent
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # it ended meanwhile
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found
