"""ADFS sign-in through OpenID Connect (Authlib's Flask client): authorization code with state,
nonce and PKCE; the ID token is checked against the provider's keys, its issuer and our client id.

The OMERO user name comes from the ID token (PORTAL_OIDC_USERNAME_CLAIMS, first one present,
PORTAL_OIDC_USERNAME_STRIP removed). With an admin connection the portal then opens an OMERO session
for that user itself; without one, the user pastes a key from OMERO.web's token page instead. The
provider's tokens are used once, here, and never stored.
"""
from __future__ import annotations

import requests
from authlib.integrations.base_client.errors import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Flask, abort, current_app, flash, redirect, render_template, request, session, url_for
from joserfc.errors import ClaimError, ExpiredTokenError, JoseError

from app.auth import bp
from app.auth.signin import OMERO_SESSION_TTL, log, next_url, sign_in
from app.core.omero.base import OmeroError

CLAIM_MESSAGES = {
    "iss": "The answer did not come from the configured ADFS (wrong issuer), so the portal cannot trust it",
    "aud": "The answer was made for another application (wrong audience), so the portal cannot trust it",
    "azp": "The answer was made for another application (wrong audience), so the portal cannot trust it",
    "nonce": "The answer does not belong to this sign-in (nonce mismatch): start again",
}


def init_app(app: Flask) -> None:
    """Register ADFS when PORTAL_OIDC_DISCOVERY_URL is set; its metadata is fetched on first use."""
    if not app.config["OIDC_DISCOVERY_URL"]:
        return
    oauth = OAuth(app)
    app.extensions["oidc"] = oauth.register(
        "adfs",
        client_id=app.config["OIDC_CLIENT_ID"],
        client_secret=app.config["OIDC_CLIENT_SECRET"],
        server_metadata_url=app.config["OIDC_DISCOVERY_URL"],
        client_kwargs={"scope": app.config["OIDC_SCOPE"], "code_challenge_method": "S256", "timeout": 20},
    )


def _client():
    client = current_app.extensions.get("oidc")
    if client is None:
        abort(404)
    return client


def _refuse(message: str, status: int):
    log.info("ADFS sign-in refused: %s", message)
    flash(message, "error")
    return render_template("login.html"), status


@bp.get("/login/adfs")
def adfs_start():
    """Send the browser to ADFS."""
    client = _client()
    session["adfs_next"] = next_url(request.args.get("next"))
    try:
        return client.authorize_redirect(url_for("auth.adfs_callback", _external=True))
    except (requests.RequestException, ValueError) as e:
        log.warning("ADFS metadata unavailable: %s", type(e).__name__)
        return _refuse("ADFS cannot be reached right now: try again in a minute, or sign in with an OMERO key", 503)


def _id_token_claims(client) -> dict:
    """The verified ID token's claims; raises what Authlib and joserfc raise."""
    metadata = client.load_server_metadata()
    # Stricter than Authlib's default, which checks the audience only through `azp`.
    options = {"iss": {"essential": True, "value": metadata.get("issuer")},
               "aud": {"essential": True, "value": client.client_id}}
    token = client.authorize_access_token(claims_options=options)
    claims = token.get("userinfo")
    if not claims:
        raise OAuthError(error="no_id_token", description="ADFS sent no ID token (is the scope `openid` asked?)")
    return dict(claims)


def username_from(claims: dict) -> str | None:
    config = current_app.config
    for name in config["OIDC_USERNAME_CLAIMS"]:
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            value = value.strip()
            if config["OIDC_USERNAME_STRIP"] is not None:
                value = config["OIDC_USERNAME_STRIP"].sub("", value)
            if value and len(value) <= 255 and value.isprintable():
                return value
    return None


def staff_from(claims: dict) -> bool:
    claim, wanted = current_app.config["STAFF_GROUP_CLAIM"], current_app.config["STAFF_GROUP_VALUE"]
    if not claim:
        return False
    values = claims.get(claim)
    values = [values] if isinstance(values, str) else values or []
    return wanted in values


@bp.get("/login/adfs/callback")
def adfs_callback():
    """Finish the ADFS sign-in: verify the answer, open an OMERO session, sign the user in."""
    client = _client()
    try:
        claims = _id_token_claims(client)
    except MismatchingStateError:
        return _refuse("This sign-in answer does not belong to this browser's sign-in (it may be old or "
                       "opened twice): start again", 400)
    except OAuthError as e:
        return _refuse(f"ADFS refused the sign-in: {e.description or e.error}", 400)
    except ExpiredTokenError:
        return _refuse("The ID token from ADFS has expired (are the server clocks right?): start again", 400)
    except ClaimError as e:
        return _refuse(CLAIM_MESSAGES.get(e.claim, f"The ID token's `{e.claim}` claim is not valid: start again"), 400)
    except JoseError:
        return _refuse("The ID token's signature does not match ADFS's keys, so the portal cannot trust it", 400)
    except requests.RequestException as e:
        log.warning("ADFS unreachable during sign-in: %s", type(e).__name__)
        return _refuse("ADFS cannot be reached right now: try again in a minute", 503)

    username = username_from(claims)
    if username is None:
        wanted = ", ".join(current_app.config["OIDC_USERNAME_CLAIMS"])
        return _refuse(f"ADFS did not say who you are (none of the claims {wanted}): ask the facility staff "
                       "to check the portal's ADFS claims", 403)
    staff, target = staff_from(claims), session.pop("adfs_next", None)
    gateway = current_app.extensions["services"].omero
    if not gateway.can_create_sessions:
        # One more step: the user brings an OMERO key, which sign_in checks is theirs.
        session["adfs_username"], session["adfs_staff"] = username, staff
        return redirect(url_for("auth.login", next=target))
    try:
        key = gateway.create_session(username, OMERO_SESSION_TTL)
    except OmeroError as e:
        return _refuse(f"ADFS signed you in as {username}, but OMERO would not open a session for that "
                       f"user ({e}): ask the facility staff whether you have an OMERO account", 403)
    try:
        sign_in(key, source="portal", staff_claim=staff)
    except OmeroError as e:
        return _refuse(str(e), 400)
    return redirect(next_url(target))
