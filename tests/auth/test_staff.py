"""The staff role comes from configuration and is decided anew at every sign-in."""
from __future__ import annotations

import pytest

from app.auth.guards import staff_required
from app.core.models import User
from tests.helpers import Portal, close_app, make_app


@pytest.fixture
def staff_app(embedded_stack, monkeypatch):
    app = make_app(embedded_stack | {"PORTAL_STAFF_USERS": "fay, hal"}, monkeypatch)
    app.add_url_rule("/staff-check", "staff_check", staff_required(lambda: "staff only"))
    app.add_url_rule("/api/staff-check", "api_staff_check", staff_required(lambda: {"ok": True}))
    yield app
    close_app(app)


def is_staff(app, username: str) -> bool:
    with app.extensions["services"].db.session() as db:
        return db.query(User).filter_by(username=username).one().is_staff


def test_listed_users_are_staff_and_others_are_not(staff_app):
    fay, gus = Portal(staff_app.test_client(), "fay"), Portal(staff_app.test_client(), "gus")
    assert is_staff(staff_app, "fay") and not is_staff(staff_app, "gus")
    assert fay.get("/staff-check").status_code == 200 and gus.get("/staff-check").status_code == 403
    assert gus.get("/api/staff-check").get_json() == {"error": "Facility staff only", "code": "forbidden"}
    assert staff_app.test_client().get("/api/staff-check").status_code == 401


def test_the_role_is_set_again_at_each_sign_in(staff_app):
    Portal(staff_app.test_client(), "gus")
    with staff_app.extensions["services"].db.session() as db:
        db.query(User).filter_by(username="gus").one().is_staff = True  # e.g. listed before, not now
        db.commit()
    Portal(staff_app.test_client(), "gus")
    assert not is_staff(staff_app, "gus")
