"""Sign-in: ADFS (OpenID Connect), an OMERO session key, a local name (embedded mode only), and
personal API tokens for scripts.

Whatever the route, the portal ends up holding an OMERO session key for the user, encrypted in the
database (app.core.crypto), and a server-side session (app.auth.sessions) whose id is the only thing the
browser keeps.
"""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("auth", __name__)
