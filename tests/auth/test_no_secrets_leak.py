"""A whole flow (ADFS sign-in, upload, import, sign-out) with every logger at DEBUG: no log line,
no Set-Cookie and no response body carries the OMERO key or the provider's tokens."""
from __future__ import annotations

import hashlib
import logging

from flask.testing import FlaskClient

from app.core import crypto
from app.core.models import User
from tests.auth.helpers import CLIENT_SECRET, adfs_sign_in
from tests.helpers import ome_tiff
from workers import pipeline


class RecordingClient(FlaskClient):
    responses: list = []

    def open(self, *args, **kwargs):
        response = super().open(*args, **kwargs)
        self.responses.append(response)
        return response


def test_no_key_or_token_in_logs_cookies_or_pages(provider, oidc_app_for, caplog):
    caplog.set_level(logging.DEBUG)
    app = oidc_app_for(provider)
    RecordingClient.responses = []
    app.test_client_class = RecordingClient
    issued = []  # the provider's answer, seen where the portal receives it
    oidc = app.extensions["oidc"]
    fetch = oidc.fetch_access_token
    oidc.fetch_access_token = lambda **kw: issued.append(fetch(**kw)) or issued[-1]

    provider.set_user("u-301", {"upn": "lin@example.org"})
    client = app.test_client()
    assert adfs_sign_in(client, provider, "u-301").status_code == 302
    me = client.get("/api/me").get_json()
    headers = {"X-CSRFToken": me["csrf_token"]}
    data = ome_tiff(seed=51)
    batch = client.post("/api/batches", headers=headers, json={
        "group_id": me["groups"][0]["id"], "files": [{"name": "a.ome.tif", "size": len(data)}]}).get_json()
    file_id = batch["jobs"][0]["files"][0]["id"]
    assert client.put(f"/api/files/{file_id}?offset=0", data=data, headers=headers).status_code == 200
    assert client.post(f"/api/files/{file_id}/complete", headers=headers,
                       json={"sha1": hashlib.sha1(data).hexdigest()}).status_code == 200
    with app.extensions["services"].db.session() as db:
        stored = db.query(User).filter_by(username="lin").one().omero_key
    with app.app_context():
        omero_key = crypto.decrypt(stored, app.config["ENCRYPTION_KEY"])
        assert pipeline.run_job(app.extensions["services"], batch["jobs"][0]["id"], "w1") == "imported"
    assert client.post("/logout", data={"csrf_token": me["csrf_token"]}).status_code == 302

    (token,) = issued
    secrets = {"OMERO key": omero_key, "client secret": CLIENT_SECRET,
               **{name: token[name] for name in ("access_token", "id_token", "refresh_token") if token.get(name)}}
    assert omero_key and {"access_token", "id_token"} <= secrets.keys()
    assert omero_key not in stored  # encrypted at rest
    lines = [record.getMessage() for record in caplog.records]
    lines += [caplog.text]  # with tracebacks, as a handler would write them
    assert any(r.levelno == logging.DEBUG for r in caplog.records)  # the scan saw DEBUG output
    cookies = [value for r in RecordingClient.responses for value in r.headers.getlist("Set-Cookie")]
    bodies = [r.get_data(as_text=True) for r in RecordingClient.responses if r.mimetype != "text/event-stream"]
    assert len(RecordingClient.responses) >= 7 and len(bodies) == len(RecordingClient.responses) and cookies
    for name, secret in secrets.items():
        assert not [line for line in lines if secret in line], f"the {name} is in a log line"
        assert not [c for c in cookies if secret in c], f"the {name} is in a cookie"
        assert not [b for b in bodies if secret in b], f"the {name} is in a page"
