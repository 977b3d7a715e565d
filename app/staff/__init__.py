"""Facility staff: every user's jobs live, failures with their diagnostics, workers, usage, metrics.

Every route here is staff-only (403 for everyone else); the pages are /staff..., the JSON under
/api/staff... (CSRF applies to its POSTs as everywhere).
"""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("staff", __name__)
