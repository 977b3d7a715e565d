"""Security headers on every kind of response: a CSP that forbids inline script, no sniffing, no
framing; HSTS in production only (embedded mode runs on plain http://localhost)."""
import pytest

from app.core import config


def test_pages_api_and_errors_carry_the_headers(embedded_app):
    client = embedded_app.test_client()
    for url in ("/login", "/help", "/api/me", "/static/style.css", "/no-such-page"):
        response = client.get(url)
        response.close()  # a static file is streamed from disk
        headers = response.headers
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp, url
        assert headers["X-Content-Type-Options"] == "nosniff", url
        assert "Strict-Transport-Security" not in headers, url


def test_production_adds_hsts_and_secure_cookies(monkeypatch, tmp_path):
    from app.core.db import Database
    from app.factory import create_app

    env = {"PORTAL_MODE": "production", "PORTAL_SECRET_KEY": "s" * 40, "PORTAL_ENCRYPTION_KEY": "e" * 40,
           "PORTAL_DATABASE_URL": f"sqlite:///{tmp_path / 'p.sqlite'}", "PORTAL_BROKER_URL": "redis://127.0.0.1:6379/9",
           "PORTAL_OMERO_BACKEND": "embedded", "PORTAL_DATA_DIR": str(tmp_path)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    db = Database(config.load()["DATABASE_URL"])
    db.upgrade()
    db.dispose()
    app = create_app()
    try:
        response = app.test_client().get("/login")
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
        assert app.config["SESSION_COOKIE_SECURE"] is True
        assert app.test_client().post("/login", data={"username": "x"}).status_code in (400, 404)  # no local login
    finally:
        app.extensions["events"].stop()
        app.extensions["services"].db.dispose()


@pytest.mark.parametrize("missing", ["PORTAL_SECRET_KEY", "PORTAL_DATABASE_URL", "PORTAL_BROKER_URL"])
def test_production_names_each_missing_setting(missing):
    env = {"PORTAL_MODE": "production", "PORTAL_SECRET_KEY": "s" * 40, "PORTAL_ENCRYPTION_KEY": "e" * 40,
           "PORTAL_DATABASE_URL": "postgresql://db/p", "PORTAL_BROKER_URL": "redis://r", "PORTAL_OMERO_HOST": "omero"}
    del env[missing]
    with pytest.raises(config.ConfigError, match=missing):
        config.load(env)
