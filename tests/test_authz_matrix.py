"""Who may do what, over every endpoint and stream in the URL map: anonymous, the owner of the data,
another user, and staff. A new endpoint fails this test until it takes its place in the table."""
from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from app.core.models import User
import converters
from tests.helpers import Portal, close_app, make_app, ome_tiff, with_more
from tests.sse_clients import read_stream
from workers import pipeline

ROLES = ("anonymous", "owner", "other", "staff")
NOT_FOUND = {"error": "Not found", "code": "not_found"}

# Each case: method, URL (filled from the owner's objects), JSON body, and the status each role gets.
# "owner" means alice, whose batch, files, jobs, token and image the URLs name.
PAGE = {"anonymous": 302, "owner": 200, "other": 200, "staff": 200}  # signed-in pages
API = {"anonymous": 401, "owner": 200, "other": 200, "staff": 200}  # the user's own API
MINE = {"anonymous": 401, "owner": 200, "other": 404, "staff": 404}  # one user's object: others see nothing
MY_PAGE = {"anonymous": 302, "owner": 200, "other": 404, "staff": 404}
STAFF_API = {"anonymous": 401, "owner": 403, "other": 403, "staff": 200}
STAFF_PAGE = {"anonymous": 302, "owner": 403, "other": 403, "staff": 200}
PUBLIC = {role: 200 for role in ROLES}

CASES = [
    ("GET", "/", None, PAGE),
    ("GET", "/help", None, PUBLIC),
    ("GET", "/login", None, PUBLIC),
    ("POST", "/login", None, {role: 400 for role in ROLES}),  # a form without a username
    ("GET", "/login/adfs", None, {role: 404 for role in ROLES}),  # no ADFS configured on embedded defaults
    ("GET", "/login/adfs/callback", None, {role: 404 for role in ROLES}),
    ("GET", "/store", None, PAGE),
    ("GET", "/store/image/{image}", None, MY_PAGE),
    ("GET", "/store/file/{stored_file}", None, MY_PAGE),
    ("GET", "/tokens", None, PAGE),
    ("GET", "/history", None, PAGE),
    ("GET", "/api/history?state=failed&q=f.ome", None, API),
    ("POST", "/tokens", None, {"anonymous": 302, "owner": 303, "other": 303, "staff": 303}),  # then GET /tokens
    ("POST", "/tokens/{token}/revoke", None, {"anonymous": 302, "owner": 303, "other": 404, "staff": 404}),
    ("GET", "/api/me", None, API),
    ("POST", "/api/plan", {"files": [{"name": "a.tif", "size": 1}]}, API),
    # every user of the embedded store is in its one group; another group's id is refused in test_api
    ("GET", "/api/key-values?group_id={group}&key=Sample", None, API),
    ("GET", "/api/batches", None, API),
    ("POST", "/api/batches", {"group_id": "{group}", "files": [{"name": "n.tif", "size": 1}]},
     {"anonymous": 401, "owner": 201, "other": 201, "staff": 201}),
    ("GET", "/api/batches/{batch}", None, MINE),
    ("GET", "/api/files/{file}", None, MINE),
    ("PUT", "/api/files/{file}?offset=0", b"abc", MINE),
    ("POST", "/api/files/{file}/complete", {"sha1": "0" * 40}, MINE | {"owner": 409}),  # not all bytes yet
    ("GET", "/api/jobs/{imported}", None, MINE | {"staff": 200}),  # staff read every job's record
    ("GET", "/api/jobs/{imported}/confirm", None, MINE),
    ("GET", "/api/jobs/{imported}/files/{original}", None, MINE),
    ("GET", "/api/jobs/{imported}/images/{image}", None, MINE),
    ("GET", "/api/jobs/{imported}/images/{image}/thumbnail", None, MINE | {"staff": 200}),  # the staff view shows them
    ("GET", "/api/jobs/{imported}/plots/{plot}", None, MINE | {"staff": 200}),
    ("POST", "/api/jobs/{failed}/retry", None, MINE),  # staff retry {failed2}: each a failed job
    ("POST", "/api/jobs/{waiting}/check", {"files": [{"id": "{file}", "sha1": "0" * 40}]}, MINE),  # before cancel
    ("POST", "/api/jobs/{waiting}/cancel", None, MINE),
    ("GET", "/api/tokens", None, API),
    ("POST", "/api/tokens", {"name": "matrix"}, API | {"owner": 201, "other": 201, "staff": 201}),
    ("DELETE", "/api/tokens/{token2}", None, MINE | {"owner": 204}),
    ("GET", "/api/events?after=0", None, API),
    ("GET", "/staff", None, STAFF_PAGE),
    ("GET", "/staff/jobs/{failed}", None, STAFF_PAGE),
    ("GET", "/staff/usage", None, STAFF_PAGE),
    ("GET", "/staff/usage.csv", None, STAFF_PAGE),
    ("GET", "/staff/retention", None, STAFF_PAGE),
    ("POST", "/staff/retention/remind", None, STAFF_PAGE | {"staff": 302}),
    ("GET", "/staff/omero-check", None, STAFF_PAGE),
    ("POST", "/staff/omero-check", None, STAFF_PAGE),
    ("GET", "/metrics", None, {"anonymous": 403, "owner": 403, "other": 403, "staff": 200}),
    ("GET", "/api/staff/jobs", None, STAFF_API),
    ("GET", "/api/staff/status", None, STAFF_API),
    ("GET", "/api/staff/events?after=0", None, STAFF_API),
    ("POST", "/api/staff/jobs/{failed2}/retry", None, STAFF_API),
    ("POST", "/api/staff/jobs/{waiting2}/front", None, STAFF_API | {"staff": 409}),  # reached: not queued yet
    ("POST", "/api/staff/jobs/{waiting2}/cancel", None, STAFF_API),
    ("POST", "/api/staff/jobs/{waiting2}/free", None, STAFF_API),  # cancelled just above
    ("GET", "/staff/microscopes", None, STAFF_PAGE),
    ("POST", "/staff/digest", None, STAFF_PAGE | {"staff": 303}),
    ("POST", "/staff/microscopes", None, STAFF_PAGE | {"staff": 303}),  # no name given: told so
    ("POST", "/api/staff/import-as", {"on_behalf_of": "alice"}, STAFF_API),
    ("POST", "/api/staff/batches",
     {"on_behalf_of": "alice", "group_id": "{group}", "files": [{"name": "s.tif", "size": 1}]},
     STAFF_API | {"staff": 201}),
    ("POST", "/logout", None, {"anonymous": 302, "owner": 302, "other": 302, "staff": 302}),  # last: it signs out
]
STREAMS = {"/api/events?after=0", "/api/staff/events?after=0"}


@pytest.fixture
def world(embedded_stack, monkeypatch):
    """Alice's batch with a waiting, a failed and an imported job (two images and a spectrum), her token and
    image; bob; staff sam."""
    app = make_app(embedded_stack | {"PORTAL_STAFF_USERS": "sam"}, monkeypatch)
    alice = Portal(app.test_client(), "alice")
    imported = alice.send({"done.ome.tif": ome_tiff(seed=31)})["jobs"][0]
    failed, failed2 = alice.send({"f.ome.tif": ome_tiff(seed=34), "f2.ome.tif": ome_tiff(seed=35)})["jobs"]
    real = converters.convert
    with app.app_context(), monkeypatch.context() as patched:
        patched.setattr(converters, "convert", lambda files, out, options: with_more(real(files, out, options), out))
        pipeline.run_job(app.extensions["services"], imported["id"], "matrix")
    with app.extensions["services"].db.session() as db:  # her OMERO session ends: failures Retry can fix
        db.execute(sa.update(User).where(User.username == "alice").values(omero_key=None))
        db.commit()
    with app.app_context():
        for job in (failed, failed2):
            pipeline.run_job(app.extensions["services"], job["id"], "matrix")
    alice = Portal(app.test_client(), "alice")  # signed in again
    waiting = alice.new_batch({"w.ome.tif": ome_tiff(seed=32), "w2.ome.tif": ome_tiff(seed=33)})
    tokens = [alice.post("/api/tokens", json={"name": name}).get_json()["id"] for name in ("page", "api")]
    ids = {"batch": waiting["id"], "file": waiting["jobs"][0]["files"][0]["id"], "waiting": waiting["jobs"][0]["id"],
           "waiting2": waiting["jobs"][1]["id"], "failed": failed["id"], "failed2": failed2["id"], "imported": imported["id"],
           "token": tokens[0], "token2": tokens[1], "group": alice.me["groups"][0]["id"],
           "image": app.extensions["services"].omero.images_of("alice")[0]["id"],
           "stored_file": app.extensions["services"].omero.images_of("alice")[0]["files"][0].id,
           "original": alice.get(f"/api/jobs/{imported['id']}").get_json()["originals"][0]["url"].rsplit("/", 1)[1],
           "plot": alice.get(f"/api/jobs/{imported['id']}").get_json()["plots"][0]["file_id"]}
    clients = {"anonymous": anonymous(app), "owner": alice, "other": Portal(app.test_client(), "bob"),
               "staff": Portal(app.test_client(), "sam")}
    yield app, clients, ids
    close_app(app)


def anonymous(app):
    """A visitor who is not signed in but holds a valid CSRF token: what stops them is the sign-in check."""
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True))[1]
    visitor = Portal.__new__(Portal)
    visitor.client, visitor.headers = client, {"X-CSRFToken": token}
    return visitor


def fill(value, ids):
    if isinstance(value, str):
        return int(ids[value[1:-1]]) if re.fullmatch(r"\{\w+\}", value) else value.format(**ids)
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value


def test_the_table_covers_every_endpoint_and_method(world):
    app, _, _ = world
    covered = {(method, re.sub(r"\?.*", "", url)) for method, url, _, _ in CASES}
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        pattern = re.sub(r"<[^>]+>", "[^/]+", rule.rule) + "$"
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            if not any(m == method and re.match(pattern, url) for m, url in covered):
                missing.append((method, rule.rule))
    assert not missing, f"add these to CASES with who may call them: {missing}"


def test_every_role_gets_exactly_what_it_may_on_every_endpoint(world):
    app, clients, ids = world
    wrong = []
    for role in ("anonymous", "other", "staff", "owner"):  # the owner last: its calls change the data
        who = clients[role]
        for method, url, body, expected in CASES:
            url = fill(url, ids)
            kwargs = {"headers": who.headers, "buffered": url in STREAMS and False}
            if isinstance(body, bytes):
                kwargs["data"] = body
            elif body is not None or method != "GET":
                kwargs["json"] = fill(body or {}, ids)
            if method == "POST" and url in ("/login", "/tokens"):
                kwargs = {"headers": who.headers, "data": {"csrf_token": who.headers["X-CSRFToken"], "name": "x"}}
            response = who.client.open(url, method=method, **kwargs)
            if response.status_code != expected[role]:
                wrong.append((role, method, url, response.status_code, expected[role],
                              response.get_data(as_text=True)[:120] if url not in STREAMS else ""))
            elif response.status_code == 404 and url.startswith("/api/"):
                assert response.get_json() == NOT_FOUND, (role, url)  # the same answer as an id that never was
            response.close()
            if url == "/logout":
                clients[role] = who = relogin(app, role)
    assert not wrong, "\n".join(map(str, wrong))


def relogin(app, role):
    return anonymous(app) if role == "anonymous" else Portal(app.test_client(), {"owner": "alice", "other": "bob",
                                                                                 "staff": "sam"}[role])


def test_streams_carry_only_what_each_role_may_see(world):
    app, clients, ids = world
    alice_jobs = {ids["imported"], ids["failed"], ids["failed2"], ids["waiting"], ids["waiting2"]}

    def jobs_seen(role, url):
        return {payload["job"]["id"] for _, payload in read_stream(clients[role].client, url)}

    assert jobs_seen("owner", "/api/events?after=0") == alice_jobs
    assert jobs_seen("other", "/api/events?after=0") == set()
    assert jobs_seen("staff", "/api/events?after=0") == set()  # staff follow others through the staff stream
    assert alice_jobs <= jobs_seen("staff", "/api/staff/events?after=0")
