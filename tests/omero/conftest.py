from __future__ import annotations

import pytest

from .requirements import require_omero_py


@pytest.fixture
def fake_omero():
    """A fake OMERO server with a group "Lab", users alice and bob in it, and an admin "root"."""
    require_omero_py()
    from .fake_omero import FakeOmero

    server = FakeOmero(commit_jitter=0.005)
    lab = server.store.add_group("Lab")
    server.store.add_user("alice", [lab], first="Alice", last="Liddell")
    server.store.add_user("bob", [lab])
    server.store.add_user("root", [], password="rootpw", admin=True)
    yield server
    server.close()


@pytest.fixture
def omero_gateway(fake_omero):
    """The real adapter, talking to the fake server."""
    from app.omero.omeropy import OmeroPyGateway

    return OmeroPyGateway(
        "omero.example.org", 4064, "https://omero.example.org/", admin_user="root", admin_password="rootpw",
        client_factory=fake_omero.client_factory, settle_seconds=0.05, import_timeout_seconds=5,
        poll_seconds=0.05,
    )
