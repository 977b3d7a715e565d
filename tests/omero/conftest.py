"""Fixtures of the omero-py adapter's tests: the portal signed in through the fake OMERO (fake_omero and
omero_gateway are in tests/conftest.py, the sign-in tests use them too)."""
from __future__ import annotations

import pytest

from tests.helpers import Portal, sign_in_with_key


@pytest.fixture
def portal_app(embedded_app, omero_gateway):
    embedded_app.extensions["services"].omero = omero_gateway
    return embedded_app


@pytest.fixture
def alice(portal_app, omero_gateway):
    key = omero_gateway.create_session("alice", 600)
    client, response = sign_in_with_key(portal_app, key)
    assert response.status_code == 302
    portal = Portal.__new__(Portal)
    portal.client, portal.me = client, client.get("/api/me").get_json()
    portal.headers = {"X-CSRFToken": portal.me["csrf_token"]}
    portal.key = key
    return portal
