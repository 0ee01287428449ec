"""Server settings: one typed object, from arguments or ``EDGEOTA_*`` environment variables.

Built by ``load_settings`` (never at import time), so tests and the CLI each get their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "admin", "password", "test"})
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGEOTA_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path("edgeota-data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite (WAL) in the data dir"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    bootstrap_admin_token: SecretStr | None = Field(
        default=None, description="admin token to create on first start instead of a random one"
    )
    poll_interval_s: int = Field(default=30, ge=1, le=86400)
    last_seen_flush_interval_s: float = Field(default=5.0, gt=0)
    tuf_refresh_interval_s: float = Field(default=300.0, gt=0)
    rollout_interval_s: float = Field(default=5.0, gt=0)
    timestamp_expiry_s: int = Field(default=86400, ge=60)
    timestamp_refresh_margin_s: int | None = Field(
        default=None, ge=0, description="re-sign this long before expiry; default: half of it"
    )
    max_artifact_bytes: int = Field(default=64 * 1024**3, ge=1)
    max_events_per_request: int = Field(default=500, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ServerSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both --tls-cert and --tls-key, or neither")
        if self.environment == "production":
            token = self.bootstrap_admin_token
            if token is not None and (
                token.get_secret_value().lower() in _PLACEHOLDER_SECRETS
                or len(token.get_secret_value()) < 24
            ):
                raise ValueError(
                    "EDGEOTA_BOOTSTRAP_ADMIN_TOKEN is a placeholder or shorter than 24 characters;"
                    " set a random value or leave it unset to have one generated"
                )
            if self.tls_cert is None and self.host not in _LOOPBACK_HOSTS:
                raise ValueError(
                    "production serves devices over HTTPS: give --tls-cert/--tls-key, or bind "
                    "to loopback behind a TLS-terminating proxy"
                )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'edgeota.db').resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def tuf_metadata_dir(self) -> Path:
        return self.data_dir / "tuf" / "metadata"

    @property
    def online_key_dir(self) -> Path:
        return self.data_dir / "keys" / "online"

    @property
    def dev_root_key_dir(self) -> Path:
        """Where a development server keeps its root key; production keeps it offline."""
        return self.data_dir / "keys" / "root"


def load_settings(**overrides: object) -> ServerSettings:
    """Settings from the environment, with explicit (non-None) overrides on top."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return ServerSettings(**given)  # type: ignore[arg-type]
