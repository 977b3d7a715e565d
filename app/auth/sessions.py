"""Server-side portal sessions: the browser holds only a random id in an HttpOnly cookie.

Everything else (who is signed in, the CSRF secret, flashed messages, ADFS sign-in state) is a row
in `web_sessions`, keyed by the SHA-256 of the cookie value, so a copy of the database holds no
usable cookie. Sign-out deletes the row and an idle session is refused and deleted, so both really
end the session, which Flask's signed-cookie session cannot do.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from sqlalchemy import delete
from werkzeug.datastructures import CallbackDict

from app.core.db import utcnow
from app.core.models import WebSession

TOUCH_EVERY = timedelta(seconds=60)  # last_seen is written at most this often: uploads send many requests


def _digest(cookie_value: str) -> str:
    return hashlib.sha256(cookie_value.encode()).hexdigest()


class ServerSession(CallbackDict, SessionMixin):
    def __init__(self, data: dict | None = None, row_id: str | None = None, user_id: int | None = None,
                 last_seen=None, *, stateless: bool = False, idled_out: bool = False):
        def on_update(_self):
            _self.modified = True

        super().__init__(data or {}, on_update)
        self.row_id = row_id
        self.user_id = user_id
        self.last_seen = last_seen
        self.stateless = stateless  # a bearer-token request: nothing is stored, no cookie is set
        self.idled_out = idled_out  # the browser's previous session ended by the idle timeout
        self.modified = False
        self.rotate = False
        self.ended = False

    def sign_in(self, user_id: int) -> None:
        """Start a fresh session for this user under a new id (no session fixation)."""
        self.clear()
        self.user_id, self.rotate, self.modified = user_id, True, True

    def end(self) -> None:
        self.clear()
        self.user_id, self.ended = None, True


class ServerSessionInterface(SessionInterface):
    def _idle(self, app: Flask) -> timedelta:
        return timedelta(minutes=app.config["SESSION_IDLE_MINUTES"])

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        if request.authorization and request.authorization.type == "bearer":
            return ServerSession(stateless=True)
        cookie = request.cookies.get(self.get_cookie_name(app))
        if not cookie:
            return ServerSession()
        with app.extensions["services"].db.session() as db:
            row = db.get(WebSession, _digest(cookie))
            if row is None:
                return ServerSession()
            if utcnow() - row.last_seen > self._idle(app):
                db.delete(row)
                db.commit()
                return ServerSession(idled_out=True)
            return ServerSession(dict(row.data), row.id, row.user_id, row.last_seen)

    def save_session(self, app: Flask, session: ServerSession, response: Response) -> None:
        if session.stateless:
            return
        name, domain, path = self.get_cookie_name(app), self.get_cookie_domain(app), self.get_cookie_path(app)
        if session.accessed:
            response.vary.add("Cookie")
        now = utcnow()
        if (session.row_id and session.user_id is not None and not (session.modified or session.ended)
                and now - session.last_seen <= TOUCH_EVERY):
            return  # nothing to write: most requests (each upload chunk) open no transaction here
        with app.extensions["services"].db.session() as db:
            if session.row_id and (session.ended or session.rotate):
                db.execute(delete(WebSession).where(WebSession.id == session.row_id))
                db.commit()
                session.row_id = None
            if not session and session.user_id is None:
                if session.row_id:
                    db.execute(delete(WebSession).where(WebSession.id == session.row_id))
                    db.commit()
                if session.row_id or session.ended or session.idled_out:
                    response.delete_cookie(name, domain=domain, path=path)
                return
            if session.row_id is None:
                # Sweep rows idle past the timeout here, where rows are made, so the table stays small.
                db.execute(delete(WebSession).where(WebSession.last_seen < now - self._idle(app)))
                cookie = secrets.token_urlsafe(32)
                db.add(WebSession(id=_digest(cookie), user_id=session.user_id, data=dict(session),
                                  created_at=now, last_seen=now))
                db.commit()
                # No Expires: the cookie ends with the browser (shared microscope PCs); the server
                # ends it after the idle timeout.
                response.set_cookie(
                    name, cookie, domain=domain, path=path, httponly=self.get_cookie_httponly(app),
                    secure=self.get_cookie_secure(app), samesite=self.get_cookie_samesite(app))
                return
            row = db.get(WebSession, session.row_id)
            if row is None:  # signed out elsewhere in the meantime
                return
            if session.modified:
                row.data, row.user_id, row.last_seen = dict(session), session.user_id, now
            elif now - session.last_seen > TOUCH_EVERY:
                row.last_seen = now
            db.commit()

