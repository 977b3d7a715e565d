"""The Flask app: `create_app` is the only place one is built."""
from __future__ import annotations

import logging

from flask import Flask

from app.core import config as portal_config
from app.core.config import ROOT
from app.extensions import csrf


def create_app(overrides: dict | None = None, *, check_schema: bool = True) -> Flask:
    from app import errors
    from app.auth import oidc
    from app.auth.sessions import ServerSessionInterface
    from app.core.queue import make_celery
    from app.core.services import Services
    from app.events import EventHub
    from app.slow_clients import BodyTimeout

    app = Flask(__name__, template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    app.config.update(portal_config.load(overrides=overrides))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    services = Services.from_config(app.config, check_schema)
    app.extensions["services"] = services
    app.extensions["events"] = EventHub(services.db)
    app.extensions["celery"] = make_celery(app.config)  # to send jobs; the workers run them
    app.session_interface = ServerSessionInterface()
    # CSRF is checked in app.auth.identify.load_user, which knows whether a cookie or a bearer token is used.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    csrf.init_app(app)
    oidc.init_app(app)
    errors.register(app)
    app.wsgi_app = BodyTimeout(app.wsgi_app, app.config["BODY_TIMEOUT"])

    # A blueprint package's __init__ only makes its bp; importing its modules adds their routes to it
    # (tests/test_layering.py checks every such module is named here).
    from app.api import batches, duplicates, files, jobs, records  # noqa: F401
    from app.api import bp as api_bp
    from app.auth import identify, signin, tokens  # noqa: F401
    from app.auth import bp as auth_bp
    from app.history import bp as history_bp
    from app.main import bp as main_bp
    from app.main import pages  # noqa: F401
    from app.staff import bp as staff_bp
    from app.staff import import_as, microscopes, usage  # noqa: F401
    from app.staff import jobs as staff_jobs  # noqa: F401

    app.register_blueprint(auth_bp)
    app.register_blueprint(main_bp)
    app.register_blueprint(api_bp, url_prefix="/api")
    app.register_blueprint(staff_bp)
    app.register_blueprint(history_bp)

    @app.after_request
    def security_headers(response):
        # 'wasm-unsafe-eval' lets the upload page's hashing worker compile hash-wasm's WebAssembly
        # (static/vendor); it allows no eval() of JavaScript and no inline script
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; img-src 'self' data:; "
                                    "object-src 'none'; frame-ancestors 'none'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if app.config["MODE"] == "production":
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    return app
