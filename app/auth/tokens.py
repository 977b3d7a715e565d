"""Personal API tokens for scripts and the command-line client.

A token is 32 random bytes shown once at creation; the portal keeps only its SHA-256 (a fast hash is
enough for a high-entropy secret: nobody can guess their way back). `Authorization: Bearer <token>`
then stands for the user on every /api endpoint. Tokens are made and revoked only from a browser
session, so a leaked token cannot mint more.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from flask import abort, current_app, flash, g, redirect, render_template, request, session, url_for
from sqlalchemy import select

from app.auth import bp
from app.auth.guards import login_required
from app.core import crypto
from app.core.db import utcnow
from app.core.models import ApiToken, User
from app.errors import error_response

PREFIX = "omp_"  # recognisable in a script or a secret scanner
MAX_TOKENS = 50
TOUCH_EVERY = timedelta(minutes=5)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def user_for_token(db, token: str) -> User | None:
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(token)))
    if row is None:
        return None
    now = utcnow()
    if row.last_used is None or now - row.last_used > TOUCH_EVERY:
        row.last_used = now
        db.commit()
    return db.get(User, row.user_id)


TOKEN_REFUSED = "API tokens are managed from a signed-in browser, not with another token"


def _cookie_session_only():
    if g.auth != "session":
        abort(403, TOKEN_REFUSED)


def _create(name: str) -> tuple[ApiToken, str]:
    name = name.strip()
    if not name or len(name) > 255 or not name.isprintable():
        raise ValueError("Name the token (up to 255 characters), e.g. after the script that uses it")
    with current_app.extensions["services"].db.session() as db:
        count = len(db.scalars(select(ApiToken.id).where(ApiToken.user_id == g.user.id)).all())
        if count >= MAX_TOKENS:
            raise ValueError(f"You have {count} tokens: revoke one you no longer use first")
        token = PREFIX + secrets.token_urlsafe(32)
        row = ApiToken(user_id=g.user.id, name=name, token_hash=_digest(token), prefix=token[:10])
        db.add(row)
        db.commit()
        return row, token


def _revoke(token_id: int) -> bool:
    with current_app.extensions["services"].db.session() as db:
        row = db.scalar(select(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == g.user.id))
        if row is None:
            return False
        db.delete(row)
        db.commit()
        return True


def _mine() -> list[ApiToken]:
    with current_app.extensions["services"].db.session() as db:
        return list(db.scalars(select(ApiToken).where(ApiToken.user_id == g.user.id).order_by(ApiToken.id)))


@bp.route("/tokens", methods=["GET", "POST"])
@login_required
def tokens_page():
    """List the user's API tokens; create one (shown once).

    A POST answers with a redirect to this page (a reload makes no second token); the new token waits
    for that one GET in the server-side session, encrypted like an OMERO key."""
    _cookie_session_only()
    key = current_app.config["ENCRYPTION_KEY"]
    if request.method == "POST":
        try:
            _row, made = _create(request.form.get("name", ""))
        except ValueError as e:
            flash(str(e), "error")
        else:
            session["new_token"] = crypto.encrypt(made, key)
        return redirect(url_for("auth.tokens_page"), 303)
    new_token = session.pop("new_token", None)
    return render_template("tokens.html", tokens=_mine(), new_token=new_token and crypto.decrypt(new_token, key))


@bp.post("/tokens/<int:token_id>/revoke")
@login_required
def revoke_token_page(token_id: int):
    """Revoke one of the user's API tokens."""
    _cookie_session_only()
    if not _revoke(token_id):
        abort(404)
    flash("The token is revoked: scripts using it are refused from now on", "info")
    return redirect(url_for("auth.tokens_page"), 303)


@bp.get("/api/tokens")
@login_required
def list_tokens():
    """List the user's API tokens (never the tokens themselves)."""
    return {"tokens": [t.public() for t in _mine()]}


@bp.post("/api/tokens")
@login_required
def create_token():
    """Create an API token; the answer is the only time it is shown."""
    if g.auth != "session":
        return error_response(TOKEN_REFUSED, 403)
    try:
        row, token = _create(str((request.get_json(silent=True) or {}).get("name", "")))
    except ValueError as e:
        return error_response(str(e), 400)
    return {**row.public(), "token": token}, 201


@bp.delete("/api/tokens/<int:token_id>")
@login_required
def revoke_token(token_id: int):
    """Revoke one of the user's API tokens."""
    if g.auth != "session":
        return error_response(TOKEN_REFUSED, 403)
    if not _revoke(token_id):
        return error_response("Not found", 404)
    return "", 204
