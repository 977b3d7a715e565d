"""Fixtures for sign-in: a real OpenID Connect provider process and a portal that trusts it."""
from __future__ import annotations

import pytest

from tests.auth.helpers import Provider, oidc_env
from tests.helpers import close_app, make_app


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    p = Provider(tmp_path_factory.mktemp("oidc") / "provider.log")
    yield p
    p.stop()


@pytest.fixture
def start_provider(tmp_path):
    """A provider of its own for one test, started with extra options (tampering, token lifetime)."""
    started = []

    def start(*args: str) -> Provider:
        started.append(Provider(tmp_path / f"provider-{len(started)}.log", *args))
        return started[-1]

    yield start
    for p in started:
        p.stop()


@pytest.fixture
def oidc_app_for(tmp_path, monkeypatch):
    """oidc_app_for(provider, **env) -> an embedded portal that signs in through that provider."""
    apps = []

    def build(provider: Provider, **extra):
        apps.append(make_app(oidc_env(tmp_path / str(len(apps)), provider, **extra), monkeypatch))
        return apps[-1]

    yield build
    for app in apps:
        close_app(app)


