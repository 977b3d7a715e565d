"""Who is asking, on every request: a bearer token (scripts, /api/ only) or the session cookie
(browsers), with the CSRF check the cookie needs; a refused CSRF token answers in the page's or the
API's own form."""
from __future__ import annotations

from flask import current_app, flash, g, render_template, request, session
from flask_wtf.csrf import CSRFError

from app.auth import bp
from app.auth.guards import is_api
from app.auth.tokens import user_for_token
from app.core.models import User
from app.errors import error_response
from app.extensions import csrf


@bp.before_app_request
def load_user() -> None:
    """Who is asking: a bearer token (scripts) or the session cookie (browsers); CSRF for the latter."""
    g.user, g.auth = None, None
    if request.authorization and request.authorization.type == "bearer" and is_api():
        # No cookie is involved, so a cross-site page cannot make this request: no CSRF check.
        # Tokens stand for their user on /api/ only: a leaked script token opens no page or form.
        with current_app.extensions["services"].db.session() as db:
            g.user = user_for_token(db, request.authorization.token or "")
        g.auth = "token" if g.user else None
        return
    if request.method in current_app.config["WTF_CSRF_METHODS"]:
        csrf.protect(apply_exemptions=True)
    if session.user_id is not None:
        with current_app.extensions["services"].db.session() as db:
            g.user = db.get(User, session.user_id)
        g.auth = "session" if g.user else None


@bp.app_errorhandler(CSRFError)
def csrf_refused(e: CSRFError):
    message = "This request lacks a valid security token: reload the page and try again"
    if is_api():
        return error_response(f"{message} ({e.description})", 400, "csrf")
    flash(message, "error")
    return render_template("login.html"), 400
