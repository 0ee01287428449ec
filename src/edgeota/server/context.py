"""What the app shares between requests: settings, database, stores, buffers."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from edgeota.server.artifacts import ArtifactStore
from edgeota.server.settings import ServerSettings
from edgeota.server.signer import RepositorySigner


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
