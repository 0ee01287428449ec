"""What the app shares between requests: settings, database, stores, buffers."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from edgeota.server.admission import DatabaseAdmission
from edgeota.server.artifacts import ArtifactStore
from edgeota.server.metrics import ServerMetrics
from edgeota.server.notices import ChangeFeed, LongPollWaiters
from edgeota.server.settings import ServerSettings
from edgeota.server.signer import RepositorySigner
from edgeota.timeutil import Clock, utcnow

if TYPE_CHECKING:
    from edgeota.server.sim_gate import GateRunner


@dataclass
class LastSeenBuffer:
    """Last-seen times collected on the check-in path and written in batches, off that path."""

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pending: dict[str, datetime] = field(default_factory=dict)

    def mark(self, device_id: str, when: datetime) -> None:
        with self._lock:
            self._pending[device_id] = when

    def drain(self) -> dict[str, datetime]:
        with self._lock:
            pending, self._pending = self._pending, {}
        return pending


@dataclass
class AppContext:
    settings: ServerSettings
    engine: Engine
    sessions: sessionmaker[Session]
    artifacts: ArtifactStore
    signer: RepositorySigner
    last_seen: LastSeenBuffer = field(default_factory=LastSeenBuffer)
    db_admission: DatabaseAdmission = field(default_factory=DatabaseAdmission)
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    changes: ChangeFeed = field(default_factory=ChangeFeed)  # committed desired-state changes
    waiters: LongPollWaiters = field(default_factory=LongPollWaiters)
    mqtt_device_key: bytes = b""  # derives devices' broker passwords (mqtt_notices)
    session_key: bytes = b""  # signs dashboard sessions (dashboard_auth)
    # The rollout engine's clock (simulated time in the fleet simulator, see settings).
    clock: Clock = utcnow
    # Runs simulated-environment gates; None: this process runs none (edgeota.server.sim_gate).
    gate_runner: GateRunner | None = None
    gate_runs: list[threading.Thread] = field(default_factory=list)  # gates running here
    # Set at shutdown: long background work (delta builds, gate runs) ends at its next check.
    stopping: threading.Event = field(default_factory=threading.Event)
