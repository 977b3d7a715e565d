"""The server-side session: what the cookie holds, rotation at sign-in, sign-out, idle timeout, and
which OMERO sessions sign-out closes."""
from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest

from app.core import config, crypto
from app.core.models import User, WebSession
from app.core.omero.base import SessionExpired
from tests.helpers import Portal, ome_tiff

COOKIE = "portal_session"


def cookie_of(client) -> str | None:
    cookie = client.get_cookie(COOKIE)
    return cookie.value if cookie else None


def sign_out(portal: Portal):
    return portal.client.post("/logout", data={"csrf_token": portal.me["csrf_token"]})


def test_the_cookie_is_a_random_id_httponly_lax_and_ends_with_the_browser(embedded_app):
    client = embedded_app.test_client()
    response = client.get("/login")
    header = response.headers["Set-Cookie"]
    assert header.startswith(f"{COOKIE}=") and "HttpOnly" in header and "SameSite=Lax" in header
    assert "Expires" not in header and "Max-Age" not in header
    assert "Secure" not in header  # embedded mode serves plain http on loopback
    value = cookie_of(client)
    with embedded_app.extensions["services"].db.session() as db:
        (row,) = db.query(WebSession).all()
    assert row.id == hashlib.sha256(value.encode()).hexdigest() and row.user_id is None
    assert "csrf_token" in row.data  # the CSRF secret lives on the server


def test_production_cookies_are_secure():
    loaded = config.load({"PORTAL_MODE": "production", "PORTAL_SECRET_KEY": "s" * 40, "PORTAL_ENCRYPTION_KEY": "e" * 40,
                          "PORTAL_DATABASE_URL": "postgresql://db/p", "PORTAL_BROKER_URL": "redis://r",
                          "PORTAL_OMERO_HOST": "omero"})
    assert loaded["SESSION_COOKIE_SECURE"] and loaded["SESSION_COOKIE_HTTPONLY"]
    assert loaded["SESSION_COOKIE_SAMESITE"] == "Lax"


def test_sign_in_starts_a_new_session_id(embedded_app):
    client = embedded_app.test_client()
    client.get("/login")
    before = cookie_of(client)
    Portal(client, "ann")
    assert cookie_of(client) != before
    planted = embedded_app.test_client()
    planted.set_cookie(COOKIE, before)  # a fixated id from before sign-in is worth nothing
    assert planted.get("/api/me").status_code == 401


def test_sign_out_ends_the_session_on_the_server(embedded_app):
    ann = Portal(embedded_app.test_client(), "ann")
    stolen = cookie_of(ann.client)
    assert sign_out(ann).status_code == 302
    replay = embedded_app.test_client()
    replay.set_cookie(COOKIE, stolen)
    assert replay.get("/api/me").status_code == 401
    with embedded_app.extensions["services"].db.session() as db:
        assert db.query(WebSession).filter(WebSession.user_id.isnot(None)).count() == 0


def test_an_idle_session_ends(embedded_app):
    ann = Portal(embedded_app.test_client(), "ann")
    idle = timedelta(minutes=embedded_app.config["SESSION_IDLE_MINUTES"] + 1)
    with embedded_app.extensions["services"].db.session() as db:
        row = db.query(WebSession).filter(WebSession.user_id.isnot(None)).one()
        row.last_seen -= idle
        db.commit()
    page = ann.get("/", follow_redirects=True).get_data(as_text=True)
    assert '<p class="flash-info" role="status">You were signed out after a while without activity' in page
    assert ann.get("/api/me").status_code == 401
    with embedded_app.extensions["services"].db.session() as db:
        assert db.query(WebSession).filter(WebSession.user_id.isnot(None)).count() == 0


def test_an_active_session_is_not_idle(embedded_app):
    ann = Portal(embedded_app.test_client(), "ann")
    with embedded_app.extensions["services"].db.session() as db:
        row = db.query(WebSession).filter(WebSession.user_id.isnot(None)).one()
        row.last_seen -= timedelta(minutes=embedded_app.config["SESSION_IDLE_MINUTES"] - 1)
        db.commit()
    assert ann.get("/api/me").status_code == 200
    with embedded_app.extensions["services"].db.session() as db:
        row = db.query(WebSession).filter(WebSession.user_id.isnot(None)).one()
        assert row.last_seen > row.created_at  # touched: the idle clock starts again


def _key_of(app, username: str) -> str | None:
    with app.extensions["services"].db.session() as db:
        user = db.query(User).filter_by(username=username).one()
    with app.app_context():
        return user.omero_key and crypto.decrypt(user.omero_key, app.config["ENCRYPTION_KEY"])


def test_sign_out_closes_the_omero_session_the_portal_made(embedded_app):
    ann = Portal(embedded_app.test_client(), "ann")
    key = _key_of(embedded_app, "ann")
    sign_out(ann)
    with pytest.raises(SessionExpired), embedded_app.extensions["services"].omero.session(key):
        pass
    assert _key_of(embedded_app, "ann") is None


def test_sign_out_leaves_the_omero_session_while_jobs_wait(embedded_app):
    ann = Portal(embedded_app.test_client(), "ann")
    ann.send({"a.ome.tif": ome_tiff(seed=31)})  # queued: the workers will need the key
    key = _key_of(embedded_app, "ann")
    sign_out(ann)
    assert embedded_app.extensions["services"].omero.keep_alive(key)
    assert _key_of(embedded_app, "ann") == key


def test_sign_out_leaves_the_omero_session_another_browser_uses(embedded_app):
    first, second = Portal(embedded_app.test_client(), "ann"), Portal(embedded_app.test_client(), "ann")
    key = _key_of(embedded_app, "ann")
    sign_out(first)
    assert embedded_app.extensions["services"].omero.keep_alive(key) and second.get("/api/me").status_code == 200


def test_sign_out_never_closes_a_pasted_key(embedded_app, omero_gateway, fake_omero):
    embedded_app.extensions["services"].omero = omero_gateway
    key = omero_gateway.create_session("alice", 600)  # as OMERO.web's token page hands it out
    client = embedded_app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    assert client.post("/login", data={"omero_key": key, "csrf_token": token}).status_code == 302
    csrf = client.get("/api/me").get_json()["csrf_token"]
    fake_omero.log.clear()
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 302
    assert client.get("/api/me").status_code == 401
    assert fake_omero.store.live_session(key) is not None and not fake_omero.calls("client.killSession")


@pytest.mark.parametrize("key, message", [
    ("hello-world", "That is not an OMERO session key"),
    ("1b4e28ba-2fa1-11d2-883f-0016d3cca427 extra", "That is not an OMERO session key"),
    ("1b4e28ba-2fa1-11d2-883f-0016d3cca427", "has expired or was closed"),  # well formed, but no such session
])
def test_a_malformed_key_and_an_expired_one_get_different_messages(embedded_app, key, message):
    client = embedded_app.test_client()
    page = client.get("/login").get_data(as_text=True)
    assert 'name="omero_key"' not in page  # the embedded store's keys are the portal's own: none to paste
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = client.post("/login", data={"omero_key": key, "csrf_token": token})
    assert answer.status_code == 400 and message in answer.get_data(as_text=True)
