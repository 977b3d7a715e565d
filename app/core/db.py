"""The database: one engine per process, a session per request or task, Alembic for the schema."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import ROOT


class OutdatedSchema(RuntimeError):
    pass


def utcnow() -> datetime:
    """Naive UTC, the one kind of timestamp stored (SQLite keeps no zone)."""
    return datetime.now(UTC).replace(tzinfo=None)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # pre_ping: a restarted PostgreSQL costs one failed checkout, not a failed request
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=40)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # web and worker processes read while one writes
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.Session() as session:
            yield session

    def alembic_config(self) -> AlembicConfig:
        config = AlembicConfig()
        config.set_main_option("script_location", str(ROOT / "migrations"))
        config.attributes["engine"] = self.engine
        return config

    def upgrade(self) -> None:
        from alembic import command

        if self.url.startswith("sqlite:///"):
            from pathlib import Path

            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        command.upgrade(self.alembic_config(), "head")

    def check_schema(self) -> None:
        """Refuse to run on a schema older (or newer) than this code."""
        head = ScriptDirectory.from_config(self.alembic_config()).get_current_head()
        with self.engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        if current != head:
            raise OutdatedSchema(
                f"the database schema is at {current or 'nothing'}, this code needs {head}: "
                "run `upload-portal db upgrade`"
            )

    def dispose(self) -> None:
        self.engine.dispose()
