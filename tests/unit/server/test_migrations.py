"""The Alembic migrations build exactly the schema the models describe, and go down again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from edgeota.server import db
from edgeota.server.models import Base
from support import alembic_config


def _drift(url: str) -> list[object]:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
    finally:
        engine.dispose()


def test_migrations_match_the_models_and_downgrade_cleanly(database_url: str) -> None:
    db.run_migrations(database_url)
    assert _drift(database_url) == []
    command.downgrade(alembic_config(database_url), "base")
    command.upgrade(alembic_config(database_url), "head")
    assert _drift(database_url) == []
