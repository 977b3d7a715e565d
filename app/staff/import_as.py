"""Staff importing for a user: a session of the user's own through the admin connection, so the
images are theirs, and a batch the user owns."""
from __future__ import annotations

from flask import current_app, request

from app.api.batches import new_batch
from app.auth.guards import staff_required
from app.auth.signin import remember_omero_user
from app.core.models import User
from app.core.omero.base import OmeroError
from app.errors import ApiError
from app.staff import bp

IMPORT_AS_SESSION_SECONDS = 7 * 24 * 3600  # kept alive while its jobs wait (workers.recovery)


def _import_as(username) -> User:
    """The user staff import for, with a session of their own (through the admin connection): the
    images will be theirs."""

    if not isinstance(username, str) or not username.strip():
        raise ApiError("Name the user to import for (on_behalf_of)")
    try:
        key = current_app.extensions["services"].omero.create_session(username.strip(), IMPORT_AS_SESSION_SECONDS)
        return remember_omero_user(key, source="portal", staff_claim=None)
    except OmeroError as e:
        raise ApiError(f"Cannot import as {username}: {e}") from None


@bp.post("/api/staff/import-as")
@staff_required
def api_import_as_user():
    """Open an import for a user (`on_behalf_of`): say their OMERO groups, to choose one for the batch."""
    owner = _import_as((request.get_json(silent=True) or {}).get("on_behalf_of"))
    return {"username": owner.username, "full_name": owner.full_name, "groups": owner.groups}


@bp.post("/api/staff/batches")
@staff_required
def api_import_as():
    """Create a batch on behalf of a user (`on_behalf_of`), in one of that user's groups."""
    body = request.get_json(silent=True) or {}
    return new_batch(_import_as(body.get("on_behalf_of")), body)
