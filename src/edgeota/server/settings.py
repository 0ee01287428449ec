"""Server settings: one typed object, from arguments or ``EDGEOTA_*`` environment variables.

Built by ``load_settings`` (never at import time), so tests and the CLI each get their own.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgeota.timeutil import Clock, ClockFile, ScaledClock, utcnow

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
    delta_history: int = Field(
        default=3, ge=0, le=32, description="build deltas from this many earlier releases; 0: none"
    )
    delta_interval_s: float = Field(default=2.0, gt=0)
    delta_claim_timeout_s: float = Field(
        default=1800.0, gt=0, description="a delta build claimed longer ago is taken over"
    )
    delta_max_ratio: float = Field(
        default=0.9, gt=0, le=1, description="keep a delta only below this share of the file"
    )
    release_keep: int | None = Field(
        default=None,
        ge=1,
        description="retire, on its own, releases older than the newest N of their component "
        "that nothing needs any more (see `edgeota release prune`); default: keep all",
    )
    release_prune_interval_s: float = Field(default=3600.0, gt=0)
    timestamp_expiry_s: int = Field(default=86400, ge=60)
    timestamp_refresh_margin_s: int | None = Field(
        default=None, ge=0, description="re-sign this long before expiry; default: half of it"
    )
    max_artifact_bytes: int = Field(default=64 * 1024**3, ge=1)
    max_events_per_request: int = Field(default=500, ge=1)
    # Monitoring, dashboard and notices to devices.
    device_log_max_bytes: int = Field(
        default=256 * 1024, ge=1024, description="largest agent log a device may upload"
    )
    long_poll_max_s: int = Field(
        default=60, ge=0, le=300, description="longest ?wait= of the check-in; 0: no long-poll"
    )
    session_secret: SecretStr | None = Field(
        default=None, description="signs dashboard sessions; default: a key in the data dir"
    )
    session_max_age_s: int = Field(default=8 * 3600, ge=60)
    mqtt_url: str | None = Field(
        default=None, description="broker for notices to devices, mqtts://host:port; None: off"
    )
    mqtt_device_url: str | None = Field(
        default=None, description="the broker as devices reach it; default: mqtt_url"
    )
    mqtt_ca_file: Path | None = Field(default=None, description="CA of the broker's certificate")
    mqtt_username: str = "edgeota-server"
    mqtt_password: SecretStr | None = None
    mqtt_device_key: SecretStr | None = Field(
        default=None, description="derives devices' broker passwords; default: a data-dir key"
    )
    # Simulated time, for the fleet simulator: rollout soak times and schedules then run
    # clock_scale times faster, from clock_start at the wall-clock instant clock_anchor_unix_s.
    clock_start: datetime | None = None
    clock_anchor_unix_s: float | None = None
    clock_scale: float = Field(default=1.0, gt=0)
    # Or the simulated time a fleet simulator publishes in this file (edgeota.timeutil.ClockFile).
    clock_file: Path | None = None
    # The simulated-environment gate runs simulated devices against this very server.
    gate_server_url: str | None = Field(
        default=None, description="how the gate reaches this server; default: its host and port"
    )
    gate_ca_file: Path | None = Field(
        default=None, description="CA of the server certificate; default: trust --tls-cert itself"
    )
    gate_timeout_s: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> ServerSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both --tls-cert and --tls-key, or neither")
        for url in (self.mqtt_url, self.mqtt_device_url):
            if url is not None and not url.startswith("mqtts://"):
                raise ValueError(f"MQTT URL {url!r}: notices go over TLS, use mqtts://host:port")
        scaled = self.clock_start is not None or self.clock_scale != 1.0
        if self.clock_file is not None and scaled:
            raise ValueError("give EDGEOTA_CLOCK_FILE or EDGEOTA_CLOCK_START/SCALE, not both")
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
            if scaled or self.clock_file is not None:
                raise ValueError("simulated time (EDGEOTA_CLOCK_*) is for development servers")
            if self.mqtt_url is not None and self.mqtt_password is None:
                raise ValueError("EDGEOTA_MQTT_URL is set: set EDGEOTA_MQTT_PASSWORD as well")
            if self.tls_cert is None and self.host not in _LOOPBACK_HOSTS:
                raise ValueError(
                    "production serves devices over HTTPS: give --tls-cert/--tls-key, or bind "
                    "to loopback behind a TLS-terminating proxy"
                )
        return self

    def clock(self) -> Clock:
        """The server's clock: the wall clock, or simulated time when configured."""
        if self.clock_file is not None:
            return ClockFile(self.clock_file)
        if self.clock_start is None and self.clock_scale == 1.0:
            return utcnow
        wall_now = utcnow()
        start = wall_now if self.clock_start is None else self.clock_start
        anchor = self.clock_anchor_unix_s
        anchor = wall_now.timestamp() if anchor is None else anchor
        return ScaledClock(start, anchor, self.clock_scale)

    @property
    def resolved_gate_url(self) -> str:
        if self.gate_server_url:
            return self.gate_server_url.rstrip("/")
        scheme = "https" if self.tls_cert else "http"
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "localhost") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.port}"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'edgeota.db').resolve()}"

    @property
    def secrets_dir(self) -> Path:
        """Keys the server makes for itself (session signing, device broker passwords)."""
        return self.data_dir / "keys" / "server"

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
