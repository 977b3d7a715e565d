"""Every state-changing endpoint, found from the URL map (so new ones are covered), refuses a
cookie-authenticated request without the CSRF token, and a bearer-token request needs none."""
from __future__ import annotations

import pytest

from tests.helpers import Portal

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def _value_for(converter):
    kind = type(converter).__name__
    if kind in ("IntegerConverter", "NumberConverter"):
        return 1
    if kind == "AnyConverter":
        return sorted(converter.items)[0]
    return "x"


def state_changing_requests(app) -> list[tuple[str, str]]:
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        values = {arg: _value_for(rule._converters[arg]) for arg in rule.arguments}
        url = rule.build(values, append_unknown=False)[1]
        found += [(method, url) for method in sorted(rule.methods & STATE_CHANGING)]
    return found


@pytest.fixture
def ann(embedded_app):
    return Portal(embedded_app.test_client(), "ann")


def test_the_map_has_the_endpoints_we_know(embedded_app):
    found = state_changing_requests(embedded_app)
    for known in [("POST", "/api/batches"), ("PUT", "/api/files/1"), ("POST", "/api/jobs/1/retry"),
                  ("POST", "/logout"), ("POST", "/login"), ("POST", "/api/tokens"), ("DELETE", "/api/tokens/1"),
                  ("POST", "/api/staff/jobs/1/cancel"), ("POST", "/api/staff/batches"), ("POST", "/staff/retention/remind")]:
        assert known in found


def test_every_state_changing_endpoint_refuses_a_cookie_request_without_the_token(embedded_app, ann):
    # sign-out last: it ends the session (and so the token) the others are sent with
    for method, url in sorted(state_changing_requests(embedded_app), key=lambda r: r[1] == "/logout"):
        refused = ann.client.open(url, method=method, json={})
        assert refused.status_code == 400, (method, url, refused.status_code)
        body = refused.get_data(as_text=True)
        assert "security token" in body, (method, url, body[:200])
        # with the token the same request reaches the view (which may well refuse it for its own reasons)
        allowed = ann.client.open(url, method=method, json={}, headers=ann.headers)
        assert "security token" not in allowed.get_data(as_text=True), (method, url)
    assert ann.get("/api/me").status_code == 401  # the last one, sign-out, went through


def test_a_wrong_token_is_refused_too(embedded_app, ann):
    refused = ann.client.post("/api/batches", json={}, headers={"X-CSRFToken": "forged"})
    assert refused.status_code == 400 and "security token" in refused.get_json()["error"]


def test_a_bearer_request_needs_no_csrf_token(embedded_app, ann):
    created = ann.post("/api/tokens", json={"name": "script"})
    token = created.get_json()["token"]
    script = embedded_app.test_client()
    answer = script.post("/api/batches", json={"group_id": ann.me["groups"][0]["id"],
                                               "files": [{"name": "a.ome.tif", "size": 3}]},
                         headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 201
