"""Signing in with an OMERO session key or, in embedded mode, a local name; signing out.

Whatever the route (ADFS ends here too, app.auth.oidc), the portal ends up holding the user's OMERO
session key encrypted in the database (app.core.crypto).
"""
from __future__ import annotations

import logging
import re
from datetime import timedelta

from flask import abort, current_app, flash, g, redirect, render_template, request, session, url_for
from sqlalchemy import func, select

from app.auth import bp
from app.core import crypto
from app.core.db import utcnow
from app.core.models import Job, JobState, User, WebSession
from app.core.omero.base import OmeroError, SessionExpired

log = logging.getLogger(__name__)

OMERO_SESSION_TTL = 7 * 24 * 3600  # sessions the portal makes: long enough for a queue to drain
# OMERO session keys are UUIDs (the embedded store's: 43 characters of URL-safe base64); anything
# else is a paste gone wrong, and says so rather than "expired".
KEY_PATTERN = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|[A-Za-z0-9_-]{43}")
MALFORMED_KEY = ("That is not an OMERO session key: copy the whole key exactly as OMERO.web's session-token page "
                 "shows it (36 characters: letters a-f, digits and four dashes, like 1b4e28ba-2fa1-11d2-883f-0016d3cca427)")
EXPIRED_KEY = "That OMERO session key has expired or was closed: get a fresh key from OMERO.web and sign in again"


def check_key_format(key: str) -> None:
    if not KEY_PATTERN.fullmatch(key):
        raise MalformedKey(MALFORMED_KEY)


class MalformedKey(ValueError):
    pass


def _is_staff(username: str, is_admin: bool, staff_claim: bool) -> bool:
    return is_admin or staff_claim or username in current_app.config["STAFF_USERS"]


def sign_in(omero_key: str, *, source: str = "user", staff_claim: bool = False,
            expected_username: str | None = None) -> User:
    """Validate the key by joining the OMERO session; remember the user, their groups and role.

    source: "portal" when the portal made the key through the admin connection (closed again at
    sign-out), "user" when it was pasted (never closed by the portal).
    """
    user = remember_omero_user(omero_key, source=source, staff_claim=staff_claim, expected_username=expected_username)
    session.sign_in(user.id)
    log.info("%s signed in (%s key%s)", user.username, source, ", staff" if user.is_staff else "")
    return user


def remember_omero_user(omero_key: str, *, source: str = "user", staff_claim: bool | None = False,
                        expected_username: str | None = None) -> User:
    """The portal's row for the key's OMERO user, with groups, role and the (encrypted) key updated.
    staff_claim None (staff importing as this user) leaves a known user's role as it is."""
    gateway = current_app.extensions["services"].omero
    try:
        with gateway.session(omero_key) as omero:
            me = omero.whoami()
    except SessionExpired:
        raise SessionExpired(EXPIRED_KEY) from None
    if expected_username is not None and me.username != expected_username:
        raise OmeroError(f"That key belongs to the OMERO user {me.username}, but ADFS signed you in as "
                         f"{expected_username}: paste a key of your own")
    groups = [{"id": grp.id, "name": grp.name} for grp in me.groups]
    groups.sort(key=lambda grp: grp["id"] != me.default_group_id)  # default group first
    with current_app.extensions["services"].db.session() as db:
        user = db.query(User).filter_by(username=me.username).one_or_none() or User(username=me.username)
        user.full_name, user.groups, user.last_login = me.full_name, groups, utcnow()
        user.email = me.email or user.email
        if staff_claim is not None or user.id is None:
            user.is_staff = _is_staff(me.username, me.is_admin, bool(staff_claim))
        user.omero_key, user.omero_key_source = crypto.encrypt(omero_key, current_app.config["ENCRYPTION_KEY"]), source
        db.add(user)
        db.commit()
    return user


# Only paths on this site. Refused: a scheme or host, "//evil" and "/\\evil" (browsers read both as a
# host), and any whitespace or control character (browsers drop tabs and newlines: "/\t/evil").
_LOCAL_PATH = re.compile(r"/(?![/\\])[^\s\\\x00-\x1f\x7f]*")


def next_url(target: str | None) -> str:
    return target if target and _LOCAL_PATH.fullmatch(target) else url_for("main.index")


def _login_page(status: int = 200):
    return render_template("login.html"), status


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in with a local name (embedded mode) or an OMERO session key."""
    if request.method == "GET":
        return _login_page()
    try:
        if "omero_key" in request.form:
            key = request.form["omero_key"].strip()
            check_key_format(key)
            pending = session.get("adfs_username")  # ADFS said who; the pasted key must agree
            sign_in(key, staff_claim=bool(session.get("adfs_staff")), expected_username=pending)
        else:
            if not current_app.config["EMBEDDED"]:
                abort(404)
            username = request.form.get("username", "").strip()
            if not username or len(username) > 64 or not username.isprintable():
                flash("Enter a user name (up to 64 characters)", "error")
                return _login_page(400)
            gateway = current_app.extensions["services"].omero
            sign_in(gateway.create_session(username, OMERO_SESSION_TTL), source="portal")
    except (MalformedKey, OmeroError) as e:
        flash(str(e), "error")
        return _login_page(400)
    return redirect(next_url(request.args.get("next")))


def _others_signed_in(db, user_id: int) -> bool:
    live_since = utcnow() - timedelta(minutes=current_app.config["SESSION_IDLE_MINUTES"])
    return bool(db.scalar(select(func.count()).select_from(WebSession).where(
        WebSession.user_id == user_id, WebSession.id != session.row_id, WebSession.last_seen > live_since)))


@bp.post("/logout")
def logout():
    """End the portal session; close the OMERO session too when the portal made it."""
    if g.auth == "session":
        with current_app.extensions["services"].db.session() as db:
            user = db.get(User, g.user.id)
            waiting = db.scalar(select(func.count()).select_from(Job).where(
                Job.owner_id == user.id, Job.state.in_((JobState.UPLOADING, *JobState.CLAIMABLE))))
            if user.omero_key_source == "portal" and user.omero_key:
                if waiting or _others_signed_in(db, user.id):
                    # The workers (or another browser) still need it; its own time-to-live ends it.
                    log.info("%s signed out; their OMERO session stays for %d waiting job(s)", user.username, waiting)
                else:
                    _close_portal_key(user)
                    db.commit()
    session.end()
    flash("You are signed out", "info")
    return redirect(url_for("auth.login"))


def _close_portal_key(user: User) -> None:
    key = crypto.decrypt(user.omero_key, current_app.config["ENCRYPTION_KEY"])
    user.omero_key, user.omero_key_source = None, None
    if key:
        try:
            current_app.extensions["services"].omero.close_session(key)
        except OmeroError as e:  # the session ends by its time-to-live anyway
            log.warning("could not close %s's OMERO session: %s", user.username, e)
