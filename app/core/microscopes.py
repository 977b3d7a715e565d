"""Microscope names: the instrument text files carry -> the OMERO Project their images land in.

PORTAL_MICROSCOPE_NAMES is the initial table; staff edit names in the portal (/staff/microscopes),
stored in the database. A job reads the table when it converts, so a change applies from the next job on.
"""
from __future__ import annotations

from sqlalchemy import select

from app.core.db import utcnow
from app.core.models import Job, MicroscopeName
from app.core.services import Services
from converters.meta import clean


def table(services: Services, db) -> dict[str, str]:
    """Raw name -> Project name: the settings' table, overridden by what staff saved."""
    names = dict(services.config["MICROSCOPE_NAMES"])
    names.update({row.raw: row.name for row in db.scalars(select(MicroscopeName))})
    return names


def microscope_names(services: Services) -> dict[str, str]:
    with services.db.session() as db:
        return table(services, db)


def unmapped(db, names: dict[str, str]) -> list[str]:
    """Instrument names jobs met that no entry maps (a job without a mapping keeps the raw name)."""
    known = {clean(raw).casefold() for raw in names} | {name.casefold() for name in names.values()}
    seen = db.scalars(select(Job.microscope).where(Job.microscope.is_not(None)).distinct())
    return sorted(raw for raw in seen if raw.casefold() not in known)


def save(db, raw: str, name: str, by: str) -> None:
    """Map raw to name; an empty name removes the staff's entry (the settings' one, if any, applies again)."""
    row = db.get(MicroscopeName, raw)
    if not name:
        if row is not None:
            db.delete(row)
    elif row is None:
        db.add(MicroscopeName(raw=raw, name=name, updated_by=by))
    else:
        row.name, row.updated_by, row.updated_at = name, by, utcnow()
    db.commit()
