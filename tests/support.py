"""Helpers shared by all tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from alembic.config import Config

REQUIRE_ALL = os.environ.get("EDGEOTA_REQUIRE_ALL_TESTS") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip when a system part is missing on a developer machine; fail in CI."""
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (EDGEOTA_REQUIRE_ALL_TESTS=1 turns this skip into a failure)")
    pytest.skip(reason)


POSTGRES_ADMIN_URL = os.environ.get(
    "EDGEOTA_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: SQLite in a temp dir, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'edgeota.db'}"
        return
    import psycopg

    name = f"edgeota_test_{secrets.token_hex(6)}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        skip_or_fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {e}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace(
                "postgresql://", "postgresql+psycopg://"
            )
            yield f"{base}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class RecordingSigner:
    """Stands in for the TUF repository where a test checks only the API."""

    def __init__(self) -> None:
        self.signed: list[tuple[str, int, str, dict[str, object]]] = []
        self.removed: list[str] = []
        self.remove_calls = 0  # each call is one new targets version

    def sign_targets(self, targets: Sequence[tuple[str, int, str, dict[str, object]]]) -> None:
        self.signed.extend(targets)

    def remove_targets(self, paths: Sequence[str]) -> None:
        self.remove_calls += 1
        self.removed.extend(paths)

    def refresh_expiring(self) -> list[str]:
        return []


def alembic_config(url: str) -> Config:
    """An Alembic config for the server's migrations against ``url`` (no logging set-up)."""
    from edgeota.server import db

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg
