"""The JSON API the page (and scripts) use: batches, resumable file transfer, jobs, live events.

Every query is scoped to the signed-in user; another user's ids answer 404, as if they did not exist.
"""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__)
