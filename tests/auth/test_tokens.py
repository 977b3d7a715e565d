"""Personal API tokens: made and revoked from the browser, shown once, kept hashed, scoped to the user,
and accepted as `Authorization: Bearer` by every /api endpoint."""
from __future__ import annotations

import hashlib
import re

import pytest

from app.core.models import ApiToken, Job
from tests.helpers import Portal, ome_tiff
from workers import pipeline


class Script(Portal):
    """A script with an API token: no cookie, no CSRF token, a bearer header on every request."""

    def __init__(self, app, token: str):
        self.client = app.test_client()
        self.headers = {"Authorization": f"Bearer {token}"}
        self.me = self.get("/api/me").get_json()

    def get(self, url, **kw):
        return self.client.get(url, headers=self.headers, **kw)


@pytest.fixture
def ann(embedded_app):
    return Portal(embedded_app.test_client(), "ann")


def new_token(portal: Portal, name="sync script") -> str:
    created = portal.post("/api/tokens", json={"name": name})
    assert created.status_code == 201, created.get_json()
    return created.get_json()["token"]


def test_a_token_is_shown_once_and_kept_only_as_a_hash(embedded_app, ann):
    token = new_token(ann)
    assert token.startswith("omp_") and len(token) > 40
    listed = ann.get("/api/tokens").get_json()["tokens"]
    assert [t["name"] for t in listed] == ["sync script"] and token not in str(listed)
    with embedded_app.extensions["services"].db.session() as db:
        (row,) = db.query(ApiToken).all()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()


def test_the_tokens_page_shows_a_new_token_once(ann):
    page = ann.get("/tokens").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    posted = ann.client.post("/tokens", data={"name": "laptop", "csrf_token": csrf})
    assert (posted.status_code, posted.location) == (303, "/tokens")  # a reload of the page makes no second token
    made = ann.get("/tokens").get_data(as_text=True)
    token = re.search(r'<code class="token" id="new-token">(omp_[^<]+)</code>', made).group(1)
    assert 'data-copy="new-token"' in made and 'data-copy="push-command"' in made
    assert f'PORTAL_TOKEN={token} upload-portal push FOLDER --server http://localhost --group "Lab"' in made
    again = ann.get("/tokens").get_data(as_text=True)
    assert "laptop" in again and token not in again
    revoke = re.search(r'action="(/tokens/\d+/revoke)"', again).group(1)
    assert ann.client.post(revoke, data={"csrf_token": csrf}).status_code == 303
    after = ann.get("/tokens").get_data(as_text=True)
    assert "laptop" not in after and len(ann.get("/api/tokens").get_json()["tokens"]) == 0
    # a confirmation is a calm note, not an error box
    assert '<p class="flash-info" role="status">The token is revoked' in after and 'class="flash"' not in after
    refused = ann.client.post("/tokens", data={"name": "", "csrf_token": csrf}, follow_redirects=True)
    assert '<p class="flash" role="alert">' in refused.get_data(as_text=True)


def test_a_token_signs_in_a_script_without_a_cookie(embedded_app, ann):
    script = Script(embedded_app, new_token(ann))
    me = script.get("/api/me")
    assert me.status_code == 200 and me.get_json()["username"] == "ann"
    assert "Set-Cookie" not in me.headers


def test_a_script_uploads_and_imports_with_a_token(embedded_app, ann):
    script = Script(embedded_app, new_token(ann))
    batch = script.send({"scan.ome.tif": ome_tiff(seed=41)}, key_values=[["Sample", "S1"]])
    job_id = batch["jobs"][0]["id"]
    assert script.batch(batch["id"])["jobs"][0]["state"] == "queued"
    with embedded_app.app_context():
        assert pipeline.run_job(embedded_app.extensions["services"], job_id, "w1") == "imported"
    with embedded_app.extensions["services"].db.session() as db:
        assert db.get(Job, job_id).image_ids
    assert [b["id"] for b in ann.get("/api/batches").get_json()["batches"]] == [batch["id"]]  # the same user


def test_a_revoked_token_is_refused(embedded_app, ann):
    token = new_token(ann)
    script = Script(embedded_app, token)
    (listed,) = ann.get("/api/tokens").get_json()["tokens"]
    assert ann.client.delete(f"/api/tokens/{listed['id']}", headers=ann.headers).status_code == 204
    refused = script.get("/api/me")
    assert refused.status_code == 401 and "not valid" in refused.get_json()["error"]
    assert script.post("/api/batches", json={}).status_code == 401


def test_a_made_up_token_is_refused(embedded_app):
    assert Script(embedded_app, "omp_" + "x" * 43).get("/api/batches").status_code == 401


def test_another_users_token_cannot_see_my_batches(embedded_app, ann):
    batch = ann.send({"mine.ome.tif": ome_tiff(seed=42)})
    bob = Script(embedded_app, new_token(Portal(embedded_app.test_client(), "bob")))
    assert bob.me["username"] == "bob"
    assert bob.get(f"/api/batches/{batch['id']}").status_code == 404
    assert bob.get("/api/batches").get_json()["batches"] == []
    assert bob.post(f"/api/jobs/{batch['jobs'][0]['id']}/cancel").status_code == 404
    assert ann.get("/api/tokens").get_json()["tokens"] == []  # bob's token is not listed as ann's


def test_a_token_cannot_make_or_revoke_tokens(embedded_app, ann):
    script = Script(embedded_app, new_token(ann))
    assert script.post("/api/tokens", json={"name": "more"}).status_code == 403
    (listed,) = ann.get("/api/tokens").get_json()["tokens"]
    assert script.client.delete(f"/api/tokens/{listed['id']}", headers=script.headers).status_code == 403


def test_a_staff_token_opens_the_staff_api_but_no_staff_page(embedded_app):
    """Tokens are for /api/ only: one that leaks from a script must not open the pages or change the
    microscope mapping (a form with no CSRF check for bearer requests)."""
    from app.core.models import MicroscopeName
    from tests.helpers import make_staff

    sam = Portal(embedded_app.test_client(), "sam")
    make_staff(embedded_app, "sam")
    script = Script(embedded_app, new_token(sam))
    assert script.get("/api/staff/jobs").status_code == 200
    for page in ("/staff", "/staff/microscopes", "/staff/usage", "/tokens", "/"):
        response = script.get(page)
        assert response.status_code == 302 and "/login" in response.headers["Location"], page
    changed = script.client.post("/staff/microscopes", data={"raw": "TITAN1", "name": "Stolen"}, headers=script.headers)
    assert changed.status_code in (302, 400) and "/staff" not in changed.headers.get("Location", "")
    with embedded_app.extensions["services"].db.session() as db:
        assert db.get(MicroscopeName, "TITAN1") is None
