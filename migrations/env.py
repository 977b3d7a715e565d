"""Alembic environment: the engine comes from the portal (`upload-portal db upgrade`)."""
from alembic import context
from sqlalchemy import create_engine

from app.core import config as portal_config
from app.core.models import Base

engine = context.config.attributes.get("engine") or create_engine(portal_config.load()["DATABASE_URL"])

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()
