"""What the web app and the workers are built on, made once from the settings: the database, the
staging area and the OMERO gateway. Workers are handed this object, never a Flask app."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from app.core.db import Database
from app.core.omero import make_gateway
from app.core.omero.base import Gateway
from app.core.staging import Staging


@dataclass
class Services:
    config: Mapping  # the settings (app.core.config.load), with TZ the zone of TIMEZONE
    db: Database
    staging: Staging
    omero: Gateway

    @classmethod
    def from_config(cls, config: dict, check_schema: bool = True) -> Services:
        config["TZ"] = ZoneInfo(config["TIMEZONE"])
        db = Database(config["DATABASE_URL"])
        if check_schema:
            db.check_schema()
        return cls(config, db, Staging(config["STAGING_DIR"], config["STAGING_RESERVE"]), make_gateway(config))
