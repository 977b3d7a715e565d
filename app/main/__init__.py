"""The pages: the upload page, the help page and, in embedded mode, a view of the embedded OMERO store."""
from __future__ import annotations

from flask import Blueprint, abort, current_app, g, render_template, send_file

from app.auth import login_required
from app.core import retention

bp = Blueprint("main", __name__)

# What a row of the upload page can say, in order: its label, its colour, what it means. The page
# and the help page both read this list, so the legend and the rows never disagree.
STATES = [
    ("pending", "Pending", "gray", "chosen, not sent yet (or waiting for its turn)"),
    ("sending", "Uploading", "cyan", "the bytes are on their way; the bar shows how far"),
    ("checking", "Checking", "cyan", "the file's checksum is computed on this computer, and OMERO asked whether it holds the same content"),
    ("offline", "Waiting for network", "gray", "the connection dropped; sending goes on by itself when it is back"),
    ("notsent", "Not sent", "red", "cannot be imported as chosen (a partner file is missing, or the format is not supported)"),
    ("queued", "Queued", "yellow", "the file is safe on the transfer server and waits for a worker"),
    ("converting", "Converting", "cyan", "being converted to OME-TIFF with its metadata"),
    ("importing", "Importing", "cyan", "being imported into OMERO"),
    ("imported", "Imported", "green", "in OMERO, with a link to the image"),
    ("duplicate", "Already in OMERO", "orange", "the same content is already among your images: nothing was added; the link opens it"),
    ("failed", "Failed", "red", "not imported; the reason is shown, and Retry is offered when the files are still on the server"),
    ("cancelled", "Cancelled", "gray", "you cancelled it before it started"),
]


@bp.get("/")
@login_required
def index():
    """Show the upload page, with a reminder when older imports must leave the transfer server."""
    days = current_app.config["RETENTION_DAYS"]
    with current_app.extensions["services"].db.session() as db:
        entries = retention.due(db, days, owner_id=g.user.id)
    return render_template("upload.html", retention=entries[0] if entries else None, retention_days=days,
                           states={state: label for state, label, _c, _m in STATES})


@bp.get("/help", endpoint="help")
def help_page():
    """Explain signing in, uploading, the states and where images land; open to everyone."""
    return render_template("help.html", states=STATES)


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
