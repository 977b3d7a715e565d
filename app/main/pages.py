"""The pages: the upload page, the help page and, in embedded mode, a view of the embedded OMERO store."""
from __future__ import annotations

from flask import abort, current_app, g, render_template, send_file

from app.auth.guards import login_required
from app.core import retention
from app.core.jobs import STATES, page_states
from app.main import bp
from converters import declared


@bp.get("/")
@login_required
def index():
    """Show the upload page, with a reminder when older imports must leave the transfer server."""
    days = current_app.config["RETENTION_DAYS"]
    with current_app.extensions["services"].db.session() as db:
        entries = retention.due(db, days, owner_id=g.user.id)
    return render_template("upload.html", retention=entries[0] if entries else None, retention_days=days,
                           states=page_states())


@bp.get("/help", endpoint="help")
def help_page():
    """Explain signing in, uploading, the states, where images land and the formats read; open to everyone."""
    return render_template("help.html", states=[s for s in STATES if s.in_legend], formats=declared.readers(),
                           files_read=declared.files_read)


@bp.get("/store")
@bp.get("/store/image/<int:image_id>")
@login_required
def store(image_id: int | None = None):
    """Show where the user's images landed in the embedded OMERO store."""
    gateway = current_app.extensions["services"].omero
    if not hasattr(gateway, "images_of"):
        abort(404)
    images = gateway.images_of(g.user.username)
    if image_id is not None:
        images = [image for image in images if image["id"] == image_id] or abort(404)
    return render_template("store.html", images=images, single=image_id is not None)


@bp.get("/store/file/<int:file_id>")
@login_required
def store_file(file_id: int):
    """Send one of the user's files attached in the embedded store (an original, a spectrum)."""
    gateway = current_app.extensions["services"].omero
    found = gateway.file_of(g.user.username, file_id) if hasattr(gateway, "file_of") else None
    if found is None:
        abort(404)
    path, name = found
    return send_file(path, as_attachment=True, download_name=name)
