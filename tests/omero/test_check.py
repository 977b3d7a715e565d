"""`upload-portal check-omero` and the staff page's OMERO check, on the embedded store and the fake.

What the check made is read back from the store itself (its SQLite index and files), not from the
check's own report."""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import tifffile

from app.cli import main
from app.core.omero.check import SelfCheck
from app.core.omero.embedded import EmbeddedGateway

from .requirements import require_omero_py


def store_rows(root: Path, table: str) -> list[tuple]:
    with closing(sqlite3.connect(root / "store.sqlite")) as db:
        return db.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - a fixed table name


@pytest.fixture
def embedded_env(tmp_path, monkeypatch):
    for name in ("PORTAL_OMERO_BACKEND", "PORTAL_OMERO_ADMIN_USER", "PORTAL_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PORTAL_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data" / "omero-store"


def test_check_omero_json_on_the_embedded_store(embedded_env, capsys):

    status = main(["check-omero", "--json"])
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["check"] for r in results] == [
        "connect", "admin rights", "groups", "scratch container", "import", "key-values", "tag", "original file",
        "find by SHA-1", "download", "duplicate lookup", "multi-series", "clean up"]
    assert all(set(r) == {"check", "ok", "detail"} for r in results)
    failed = {r["check"] for r in results if not r["ok"]}
    assert failed == set() and status == 0
    (series,) = [r["detail"] for r in results if r["check"] == "multi-series"]
    assert series.startswith("3 images in one fileset (") and "part of it refused, all of it deleted" in series
    # Everything it made is gone again.
    for table in ("images", "datasets", "projects", "image_tags", "files", "image_files"):
        assert store_rows(embedded_env, table) == []
    assert not [p for p in (embedded_env / "files").rglob("*") if p.is_file()]


def test_the_check_imports_what_it_says_then_removes_it(tmp_path):
    gateway = EmbeddedGateway(tmp_path / "store", groups=("Lab",))
    check = SelfCheck(gateway, key=None, admin_user="checker")
    seen = {}
    for result in check.results():
        if result.check == "duplicate lookup":  # the last check of the first image: read the store now
            ((path, annotations),) = [row[9:11] for row in store_rows(tmp_path / "store", "images")]
            (stored,) = [p for p in (tmp_path / "store" / path).iterdir() if p.suffix == ".tif"]
            with tifffile.TiffFile(stored) as tif:
                seen = {"sha1": hashlib.sha1(stored.read_bytes()).hexdigest(), "ome": tif.is_ome,
                        "shape": tif.series[0].shape, "annotations": json.loads(annotations)}
        assert result.ok, result.line()
    assert seen["sha1"] == check.file_sha1 and seen["ome"] and seen["shape"] == (32, 32)
    assert seen["annotations"]["tags"] == [f"upload-portal-check-{check.run}"]
    assert [list(kv) for kv in seen["annotations"]["key_values"].values()] == [[["upload-portal-check", check.run]]]
    assert store_rows(tmp_path / "store", "images") == []


def test_a_failing_check_says_how_to_fix_it_and_later_ones_do_not_run(embedded_env, capsys):
    assert main(["check-omero", "--group", "No Such Group"]) == 1
    lines = capsys.readouterr().out.splitlines()
    groups = next(line for line in lines if re.match(r"FAIL\s+groups\b", line))
    assert "no group named 'No Such Group'" in groups and "to fix: add the account to at least one OMERO group" in groups
    assert re.match(r"FAIL\s+import\s+not run: the scratch container check failed", lines[4])
    assert re.match(r"ok\s+clean up\s+removed nothing", lines[-1])


def test_a_key_that_is_not_a_session_fails_the_connect_check(embedded_env, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("not-a-session\n"))
    assert main(["check-omero", "--key", "-"]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("FAIL  connect") and "sign in again" in line and "to fix: check PORTAL_OMERO_HOST" in line
    assert "not-a-session" not in line


def test_staff_run_the_check_from_their_page(embedded_app):
    from tests.helpers import Portal, make_staff

    staff = Portal(embedded_app.test_client(), "sam")
    make_staff(embedded_app, "sam")
    assert "Run the check" in staff.client.get("/staff/omero-check").get_data(as_text=True)
    page = staff.client.post("/staff/omero-check", data={"csrf_token": staff.me["csrf_token"]})
    rows = re.findall(r"<tr><td>([^<]+)</td><td>(ok|FAILED)</td>", page.get_data(as_text=True))
    assert len(rows) == 13
    assert {name for name, verdict in rows if verdict == "FAILED"} == set()


def test_check_omero_on_the_fake_server(omero_gateway, fake_omero):
    require_omero_py()

    from tests.omero.fake_omero import lab_id

    fake_omero.store.users["root"].groups.insert(0, lab_id(fake_omero))  # the check needs a group to work in
    results = list(SelfCheck(omero_gateway, key=None, admin_user="root").results())
    failed = {r.check for r in results if not r.ok}
    assert failed == set(), [r.line() for r in results]
    assert results[0].detail.startswith("OMERO 5.6.14-ice36 (omero-py ")
    # The server holds nothing of it any more, tags included (the image's owner made them).
    for kind in ("project", "dataset", "image", "pixels", "fileset", "file", "tag", "map", "ialink", "dilink"):
        assert fake_omero.rows(kind) == [], kind
    assert fake_omero.calls("client.killSession")  # the session the check opened is closed


def test_an_unreachable_omero_fails_the_connect_check_with_its_remedy(embedded_env, capsys, monkeypatch):
    """The real omero-py client, pointed at a port nobody listens on."""
    require_omero_py()
    for name, value in {"PORTAL_OMERO_BACKEND": "omero", "PORTAL_OMERO_HOST": "127.0.0.1", "PORTAL_OMERO_PORT": "1",
                        "PORTAL_OMERO_ADMIN_USER": "root", "PORTAL_OMERO_ADMIN_PASSWORD": "secret"}.items():
        monkeypatch.setenv(name, value)
    assert main(["check-omero", "--json"]) == 1
    (result,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert result == {"check": "connect", "ok": False, "detail": "The OMERO server cannot be reached right now"}
