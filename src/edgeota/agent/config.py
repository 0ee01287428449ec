"""The agent's configuration: one typed value object, built by the CLI (which alone reads
options and environment variables) and passed to :func:`edgeota.agent.wiring.build_agent`."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edgeota.agent.download import DownloadLimits

# Where a fault plan may SIGKILL the agent, each right after the journal write before it:
#   download  state DOWNLOADING journaled, nothing fetched yet
#   staged    slot complete, state STAGED journaled, not switched
#   switched  current points at the new slot, state TRIAL journaled, runtime not restarted
#   health    runtime restarted on the new slot and ready, health check not yet run
#   commit    the commit (state IDLE, new committed slot) journaled, nothing reported yet
CRASH_POINTS = frozenset({"download", "staged", "switched", "health", "commit"})

DEFAULT_POLL_INTERVAL_S = 30.0


@dataclass(frozen=True)
class ContainerEngineConfig:
    """How the agent runs container components (docs/containers.md)."""

    executable: str = "podman"  # podman, docker, or a path to either: one command line
    global_args: tuple[str, ...] = ()  # e.g. ("--runtime", "runc", "--cgroup-manager", "cgroupfs")
    prefix: str = "edgeota-"  # containers are named <prefix><component>[-candidate]
    command_timeout_s: float = 300.0  # longest one engine command may take (a load, say)


@dataclass(frozen=True)
class AgentConfig:
    server_url: str
    data_dir: Path
    hardware_class: str
    device_name: str = "edge-device"
    ca_file: Path | None = None  # CA that signed the server's TLS certificate
    root_file: Path | None = None  # the TUF root.json pinned at enrollment
    enroll_token: str | None = None  # one-time; only used when no identity is stored
    model_ram_budget_mb: int = 1024
    accelerators: tuple[str, ...] = ()  # e.g. ("cuda",): model variants needing one may be sent
    # The device's IANA time zone, reported in the inventory (None: not reported); the CLI
    # fills it from the system (system_time_zone) unless given.
    timezone: str | None = None
    poll_interval_s: float | None = None  # None: the interval the server asks for
    poll_jitter: float = 0.2  # each wait is poll_interval * uniform(1 - j, 1 + j)
    backoff_initial_s: float = 1.0  # first wait after a failed check-in, doubled each time
    backoff_max_s: float = 300.0
    http_timeout_s: float = 30.0
    runtime_host: str = "127.0.0.1"
    runtime_port: int = 8510
    ready_timeout_s: float = 60.0  # runtime must answer /healthz within this after a start
    health_timeout_s: float = 60.0  # budget of the whole health check
    max_trial_attempts: int = 2  # health checks tried (interrupted ones count) before rollback
    restart_budget: int = 3  # runtime exits tolerated within restart_window_s
    restart_window_s: float = 60.0
    disk_reserve_mb: int = 64  # disk that must stay free after a download
    download: DownloadLimits = field(default_factory=DownloadLimits)
    agent_version: str = ""
    # A switch inside a maintenance window starts only if the window stays open this long
    # (room for the restart and the health check); a deferral on a device without windows
    # puts the update off this long.
    switch_margin_s: float = 0.0
    no_window_deferral_s: float = 86400.0
    # The agent's local API (the device user's side and /metrics) on runtime_host; None: off.
    local_api_port: int | None = None
    notices: bool = False  # hear about changes (MQTT, else long-poll) and check in at once
    long_poll_s: int = 30  # longest wait of one long-poll request
    mqtt_ca_file: Path | None = None  # CA of the broker's certificate; default: ca_file
    # None: this device runs no containers, and container releases are refused (and said so).
    containers: ContainerEngineConfig | None = None
    crash_at: str | None = None  # fault injection: one of CRASH_POINTS
    crash_after_bytes: int | None = None  # fault injection: SIGKILL after this many bytes

    def __post_init__(self) -> None:
        if self.crash_at is not None and self.crash_at not in CRASH_POINTS:
            raise ValueError(
                f"crash_at must be one of {sorted(CRASH_POINTS)}, not {self.crash_at!r}"
            )
        if not 0 <= self.poll_jitter < 1:
            raise ValueError(f"poll_jitter must be in [0, 1), not {self.poll_jitter}")
        if self.max_trial_attempts < 1:
            raise ValueError("max_trial_attempts must be at least 1")
        if self.timezone is not None and not is_time_zone(self.timezone):
            raise ValueError(
                f"timezone {self.timezone!r} is not an IANA time zone this device knows; "
                "use a name such as 'Europe/Berlin' or 'UTC'"
            )
        if self.switch_margin_s < 0 or self.no_window_deferral_s <= 0:
            raise ValueError("switch_margin_s must be >= 0 and no_window_deferral_s > 0")
        url = urlsplit(self.server_url)
        if url.scheme not in ("https", "http") or not url.hostname:
            raise ValueError(f"server_url must be an http(s) URL, not {self.server_url!r}")
        if url.scheme == "http" and url.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(
                f"plain HTTP is allowed only on loopback, not for {self.server_url!r}: use https"
            )

    @property
    def metadata_base_url(self) -> str:
        return f"{self.server_url.rstrip('/')}/tuf/metadata/"

    @property
    def targets_base_url(self) -> str:
        return f"{self.server_url.rstrip('/')}/tuf/targets/"

    @property
    def journal_path(self) -> Path:
        return self.data_dir / "journal.json"

    @property
    def lock_path(self) -> Path:
        return self.data_dir / "agent.lock"

    @property
    def downloads_dir(self) -> Path:
        return self.data_dir / "downloads"

    @property
    def download_limits(self) -> DownloadLimits:
        """The download limits with the fault plan's byte count and the disk reserve."""
        crash = self.crash_after_bytes
        return replace(
            self.download,
            crash_after_bytes=self.download.crash_after_bytes if crash is None else crash,
            reserve_bytes=self.disk_reserve_mb * 1024 * 1024,
        )


def is_time_zone(name: str) -> bool:
    """Whether ``name`` is an IANA time zone this machine's zone database has."""
    if not name or name.startswith("/") or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def system_time_zone(environ: Mapping[str, str], localtime: Path = Path("/etc/localtime")) -> str:
    """The system's IANA time zone: ``TZ`` if it names one, else the zone ``localtime`` links
    to (``…/zoneinfo/Europe/Berlin``), else "UTC". The caller passes the environment."""
    candidates = []
    tz = environ.get("TZ", "").removeprefix(":")
    if tz:
        candidates.append(_zone_from_path(tz) if tz.startswith("/") else tz)
    with contextlib.suppress(OSError):  # not a symlink, or none: containers often have neither
        candidates.append(_zone_from_path(str(localtime.readlink())))
    return next((c for c in candidates if c and is_time_zone(c)), "UTC")


def _zone_from_path(path: str) -> str:
    """``Europe/Berlin`` from ``/usr/share/zoneinfo/Europe/Berlin`` (or its posix/ copy)."""
    _, found, name = path.rpartition("zoneinfo/")
    if not found:
        return ""
    return name.removeprefix("posix/").removeprefix("right/")
