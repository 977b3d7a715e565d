"""Tests that need omero-py: skipped locally without it, failed in CI (where it must be installed)."""
from __future__ import annotations

import os

import pytest


def require_omero_py() -> None:
    try:
        import Ice  # noqa: F401  (omero-py's Ice runtime: built by scripts/install-omero.sh)
        import omero.clients  # noqa: F401
    except ImportError as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"omero-py must be installed in CI ({e}): run scripts/install-omero.sh", pytrace=False)
        pytest.skip(f"omero-py is not installed ({e}): run scripts/install-omero.sh", allow_module_level=True)
