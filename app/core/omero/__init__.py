"""The OMERO boundary (see base.py) and the choice of its implementation from settings."""
from __future__ import annotations

from app.core.omero.base import Gateway


def make_gateway(config) -> Gateway:
    if config["OMERO_BACKEND"] == "embedded":
        from app.core.omero.embedded import EmbeddedGateway

        return EmbeddedGateway(config["EMBEDDED_STORE_DIR"], "/store", config["EMBEDDED_GROUPS"])
    if config["OMERO_BACKEND"] == "omero":
        from app.core.omero.omeropy import OmeroPyGateway  # needs the `omero` extra (zeroc-ice)

        return OmeroPyGateway(
            config["OMERO_HOST"], config["OMERO_PORT"], web_url=config["OMERO_WEB_URL"] or "",
            admin_user=config["OMERO_ADMIN_USER"], admin_password=config["OMERO_ADMIN_PASSWORD"],
        )
    raise ValueError(f"PORTAL_OMERO_BACKEND must be 'embedded' or 'omero', not {config['OMERO_BACKEND']!r}")
