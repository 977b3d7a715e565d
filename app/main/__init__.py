"""The pages: the upload page, the help page and, in embedded mode, a view of the embedded OMERO store."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("main", __name__)
