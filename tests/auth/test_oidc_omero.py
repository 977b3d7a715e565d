"""ADFS sign-in with the omero-py adapter (on the strict fake): the admin connection opens the
user's session; without admin credentials the user pastes a key from OMERO.web's token page."""
from __future__ import annotations

import re

import pytest

from app.core.models import User
from app.core.omero.omeropy import OmeroPyGateway
from tests.auth.helpers import adfs_sign_in, flashed


@pytest.fixture
def app_with_admin(provider, oidc_app_for, omero_gateway):
    app = oidc_app_for(provider, PORTAL_OMERO_WEB_URL="https://omero.example.org")
    app.extensions["services"].omero = omero_gateway
    return app


@pytest.fixture
def app_without_admin(provider, oidc_app_for, fake_omero):
    app = oidc_app_for(provider, PORTAL_OMERO_WEB_URL="https://omero.example.org/")
    app.extensions["services"].omero = OmeroPyGateway("omero.example.org", 4064, "https://omero.example.org/",
                                             client_factory=fake_omero.client_factory)
    return app


def test_the_admin_connection_opens_the_users_session(provider, app_with_admin, fake_omero):
    provider.set_user("u-201", {"upn": "alice@example.org"})
    client = app_with_admin.test_client()
    assert adfs_sign_in(client, provider, "u-201").status_code == 302
    who = client.get("/api/me").get_json()
    assert who["username"] == "alice" and who["full_name"] == "Alice Liddell" and who["groups"][0]["name"] == "Lab"
    assert [c for c in fake_omero.log if c[0] == "session.createSessionWithTimeout"][0][1] == "alice"


def test_an_omero_admin_is_staff(provider, app_with_admin):
    provider.set_user("u-202", {"upn": "root@example.org"})
    client = app_with_admin.test_client()
    assert adfs_sign_in(client, provider, "u-202").status_code == 302
    with app_with_admin.extensions["services"].db.session() as db:
        assert db.query(User).filter_by(username="root").one().is_staff


def test_a_user_omero_does_not_know_is_refused_with_a_message(provider, app_with_admin):
    provider.set_user("u-203", {"upn": "carol@example.org"})
    client = app_with_admin.test_client()
    answer = adfs_sign_in(client, provider, "u-203")
    assert answer.status_code == 403
    assert "ADFS signed you in as carol, but OMERO would not open a session" in flashed(answer)
    assert client.get("/api/me").status_code == 401


def _paste(client, key):
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return page, client.post("/login", data={"omero_key": key, "csrf_token": token})


def test_without_admin_credentials_the_user_pastes_a_key_from_the_token_page(
        provider, app_without_admin, omero_gateway, fake_omero):
    provider.set_user("u-204", {"upn": "alice@example.org"})
    client = app_without_admin.test_client()
    answer = adfs_sign_in(client, provider, "u-204")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/login")
    assert client.get("/api/me").status_code == 401  # not signed in yet
    assert not [c for c in fake_omero.log if c[0] == "session.createSessionWithTimeout"]

    key = omero_gateway.create_session("alice", 600)  # what OMERO.web's token page would show alice
    page, done = _paste(client, key)
    assert "One more step, alice" in page and 'href="https://omero.example.org/oauth/sessiontoken"' in page
    assert done.status_code == 302
    assert client.get("/api/me").get_json()["username"] == "alice"
    with app_without_admin.extensions["services"].db.session() as db:
        assert db.query(User).filter_by(username="alice").one().omero_key_source == "user"


def test_without_admin_credentials_a_key_of_someone_else_is_refused(
        provider, app_without_admin, omero_gateway):
    provider.set_user("u-205", {"upn": "alice@example.org"})
    client = app_without_admin.test_client()
    adfs_sign_in(client, provider, "u-205")
    _page, refused = _paste(client, omero_gateway.create_session("bob", 600))
    assert refused.status_code == 400
    assert "belongs to the OMERO user bob, but ADFS signed you in as alice" in flashed(refused)
    assert client.get("/api/me").status_code == 401
