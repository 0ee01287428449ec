"""First start of a server on a data dir: database, keys, first admin token."""

from __future__ import annotations

import os
from dataclasses import dataclass

from edgeota.errors import EdgeotaError
from edgeota.server.db import make_engine, make_sessionmaker, run_migrations, session_scope
from edgeota.server.services import tokens
from edgeota.server.settings import ServerSettings
from edgeota.server.signer import expiry_policy
from edgeota.timeutil import utcnow
from edgeota.trust.repository import init_repository


class SetupError(EdgeotaError):
    """The data dir cannot be used as it is; the message says what to run."""


@dataclass(frozen=True)
class Prepared:
    first_admin_token: str | None  # shown once, on the start that created it
    created_dev_keys: bool


def tuf_initialized(settings: ServerSettings) -> bool:
    return (settings.tuf_metadata_dir / "1.root.json").is_file()


def init_keys(settings: ServerSettings, root_key_dir: os.PathLike[str] | str) -> None:
    """``edgeota keys init``: the root key goes to ``root_key_dir`` (then keep it offline)."""
    from pathlib import Path

    if tuf_initialized(settings):
        raise SetupError(
            f"{settings.tuf_metadata_dir} already holds a TUF repository; keys are made once. "
            "Rotate keys instead of re-initializing, or use a fresh --data-dir"
        )
    init_repository(
        settings.tuf_metadata_dir,
        settings.online_key_dir,
        Path(root_key_dir),
        expiry_policy(settings),
        utcnow(),
    )


def prepare(settings: ServerSettings) -> Prepared:
    """Make the data dir ready: migrate the database, make dev keys, create an admin token."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    run_migrations(settings.resolved_database_url)
    created_keys = False
    if not tuf_initialized(settings):
        if settings.environment == "production":
            raise SetupError(
                "no TUF keys in this data dir: run `edgeota keys init --data-dir "
                f"{settings.data_dir} --root-key-dir /path/on/offline/media` first"
            )
        init_keys(settings, settings.dev_root_key_dir)
        created_keys = True
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            first = None
            if not tokens.has_admin_tokens(session):
                bootstrap = settings.bootstrap_admin_token
                first = tokens.create_admin_token(
                    session,
                    "first",
                    secret=None if bootstrap is None else bootstrap.get_secret_value(),
                )
    finally:
        engine.dispose()
    return Prepared(first_admin_token=first, created_dev_keys=created_keys)
