"""Who may see what: pages send the signed-out to the sign-in page, the API answers 401; staff-only
views refuse everyone else with 403."""
from __future__ import annotations

import functools

from flask import abort, flash, g, redirect, request, session, url_for

from app.errors import error_response


def is_api() -> bool:
    return request.blueprint == "api" or request.path.startswith("/api/")


def login_required(view):
    """Pages redirect to the sign-in page; the API answers 401."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if g.user is None:
            if is_api():
                if request.authorization and request.authorization.type == "bearer":
                    return error_response("This API token is not valid (revoked?): create a new one at /tokens", 401)
                return error_response("Sign in first", 401)
            if session.idled_out:
                flash("You were signed out after a while without activity: sign in again", "info")
            return redirect(url_for("auth.login", next=request.path))
        return view(*args, **kwargs)
    return wrapped


def staff_required(view):
    """Facility staff only: everyone else gets 403 (401 / the sign-in page when signed out)."""
    @functools.wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if not g.user.is_staff:
            if is_api():
                return error_response("Facility staff only", 403)
            abort(403)
        return view(*args, **kwargs)
    return wrapped

