"""ADFS sign-in through OpenID Connect, against a real provider process (oidc-provider-mock)."""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests

from app.core.models import User
from tests.auth.helpers import STAFF_GROUP, adfs_sign_in, flashed
from tests.helpers import OPEN_REDIRECTS, Portal


def me(client):
    return client.get("/api/me")


def test_adfs_signs_in_opens_an_omero_session_in_the_store_and_shows_the_groups(provider, oidc_app_for):
    app = oidc_app_for(provider)
    provider.set_user("u-101", {"upn": "jo@example.org", "name": "Jo Researcher"})
    client = app.test_client()
    done = adfs_sign_in(client, provider, "u-101")
    assert done.status_code == 302 and done.headers["Location"] == "/tokens"
    who = me(client).get_json()
    assert who["username"] == "jo" and [g["name"] for g in who["groups"]] == ["Lab", "Facility"]
    with app.extensions["services"].db.session() as db:
        user = db.query(User).filter_by(username="jo").one()
        assert user.omero_key_source == "portal" and not user.is_staff
    # the portal made the OMERO session: the embedded store knows it, the browser never saw it
    with app.app_context():
        from app.core import crypto

        key = crypto.decrypt(user.omero_key, app.config["ENCRYPTION_KEY"])
    with app.extensions["services"].omero.session(key) as omero:
        assert omero.whoami().username == "jo"
    assert key not in " ".join(c.value for c in client._cookies.values())


def test_a_staff_group_claim_makes_the_user_staff(provider, oidc_app_for):
    app = oidc_app_for(provider)
    provider.set_user("u-102", {"upn": "sam@example.org", "group": ["lab-members", STAFF_GROUP]})
    client = app.test_client()
    assert adfs_sign_in(client, provider, "u-102").status_code == 302
    with app.extensions["services"].db.session() as db:
        assert db.query(User).filter_by(username="sam").one().is_staff


def test_the_username_falls_back_through_the_configured_claims(provider, oidc_app_for):
    app = oidc_app_for(provider, PORTAL_OIDC_USERNAME_CLAIMS="upn,unique_name,email")
    provider.set_user("u-103", {"unique_name": "kim@example.org"})
    client = app.test_client()
    assert adfs_sign_in(client, provider, "u-103").status_code == 302
    assert me(client).get_json()["username"] == "kim"


def test_a_tampered_state_is_refused(provider, oidc_app_for):
    app = oidc_app_for(provider)
    provider.set_user("u-104", {"upn": "jo@example.org"})
    client = app.test_client()
    answer = adfs_sign_in(client, provider, "u-104", tamper_state=True)
    assert answer.status_code == 400 and "does not belong to this browser's sign-in" in flashed(answer)
    assert me(client).status_code == 401


def test_an_answer_from_another_browser_is_refused(provider, oidc_app_for):
    app = oidc_app_for(provider)
    provider.set_user("u-105", {"upn": "jo@example.org"})
    victim, attacker = app.test_client(), app.test_client()
    victim.get("/login/adfs")  # the victim's own sign-in state exists, but is not the attacker's
    start = attacker.get("/login/adfs").headers["Location"]
    back = urlsplit(requests.post(start, data={"sub": "u-105"}, allow_redirects=False, timeout=10).headers["Location"])
    answer = victim.get(f"{back.path}?{back.query}")  # login CSRF: the attacker's code in the victim's browser
    assert answer.status_code == 400 and me(victim).status_code == 401


@pytest.mark.parametrize("tamper, message", [
    ("issuer", "wrong issuer"),
    ("audience", "wrong audience"),
])
def test_an_id_token_for_another_issuer_or_audience_is_refused(start_provider, oidc_app_for, tamper, message):
    bad = start_provider("--tamper", tamper)
    app = oidc_app_for(bad)
    bad.set_user("u-106", {"upn": "jo@example.org"})
    client = app.test_client()
    answer = adfs_sign_in(client, bad, "u-106")
    assert answer.status_code == 400 and message in flashed(answer)
    assert me(client).status_code == 401


def test_an_expired_id_token_is_refused(start_provider, oidc_app_for):
    stale = start_provider("--token-max-age", "-600")  # beyond the 2-minute clock leeway
    app = oidc_app_for(stale)
    stale.set_user("u-107", {"upn": "jo@example.org"})
    client = app.test_client()
    answer = adfs_sign_in(client, stale, "u-107")
    assert answer.status_code == 400 and "has expired" in flashed(answer)
    assert me(client).status_code == 401


def test_claims_without_a_username_are_refused(provider, oidc_app_for):
    app = oidc_app_for(provider, PORTAL_OIDC_USERNAME_CLAIMS="upn,unique_name")
    provider.set_user("u-108", {"name": "Nobody In Particular"})
    client = app.test_client()
    answer = adfs_sign_in(client, provider, "u-108")
    assert answer.status_code == 403 and "ADFS did not say who you are (none of the claims upn, unique_name)" \
        in flashed(answer)
    assert me(client).status_code == 401


def test_adfs_is_not_offered_when_not_configured(embedded_app):
    client = embedded_app.test_client()
    assert client.get("/login/adfs").status_code == 404
    assert "Sign in with ADFS" not in client.get("/login").get_data(as_text=True)


def test_the_local_login_still_works_next_to_adfs(provider, oidc_app_for):
    app = oidc_app_for(provider)
    page = app.test_client().get("/login").get_data(as_text=True)
    assert "Sign in with ADFS" in page and "Local account" in page
    assert Portal(app.test_client(), "lee").me["username"] == "lee"


@pytest.mark.parametrize("target", OPEN_REDIRECTS)
def test_adfs_sign_in_never_redirects_off_the_portal(provider, oidc_app_for, target):
    app = oidc_app_for(provider)
    provider.set_user("u-404", {"upn": "kim@example.org"})
    done = adfs_sign_in(app.test_client(), provider, "u-404", next_url=target)
    assert done.status_code == 302 and done.headers["Location"] == "/"
