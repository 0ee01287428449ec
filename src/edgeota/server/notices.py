"""Telling devices at once that their desired state changed.

Whatever changes a device's desired state marks it on the session
(:func:`mark_desired_changed`); once that transaction commits, the :class:`ChangeFeed`
hands the device ids to its subscribers: the in-process :class:`LongPollWaiters` (which wake
check-ins waiting with ``?wait=``) and, when a broker is configured, the MQTT publisher.
Notifying only after the commit means a woken device always reads the new state.

Another server process's waiters are not woken by this one; they re-read the device's
revision when they time out, so a change is seen at the latest one long-poll later (MQTT
reaches every device whichever process made the change).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator

from sqlalchemy import event
from sqlalchemy.orm import Session, object_session, sessionmaker

from edgeota.server.models import Device

log = logging.getLogger(__name__)

_CHANGED_KEY = "edgeota.desired_changed"


def mark_desired_changed(session: Session, device_ids: Iterable[str]) -> None:
    """Record that these devices' desired state changes when ``session`` commits."""
    session.info.setdefault(_CHANGED_KEY, set()).update(device_ids)


def _revision_set(target: Device, value: object, old: object, _initiator: object) -> None:
    session = object_session(target)
    if session is not None and value != old:
        mark_desired_changed(session, [target.id])


def track_revision_changes() -> None:
    """Mark a device whenever its ``desired_revision`` attribute is set through the ORM.

    Bulk UPDATEs bypass attribute events: their callers call :func:`mark_desired_changed`.
    """
    if not event.contains(Device.desired_revision, "set", _revision_set):
        event.listen(Device.desired_revision, "set", _revision_set)


class ChangeFeed:
    """Calls each subscriber with the devices whose desired state a commit changed."""

    def __init__(self) -> None:
        self._subscribers: list[Callable[[Collection[str]], None]] = []

    def subscribe(self, subscriber: Callable[[Collection[str]], None]) -> None:
        self._subscribers.append(subscriber)

    def attach(self, sessions: sessionmaker[Session]) -> None:
        event.listen(sessions, "after_commit", self._after_commit)
        event.listen(sessions, "after_rollback", self._after_rollback)

    def _after_commit(self, session: Session) -> None:
        changed: set[str] | None = session.info.pop(_CHANGED_KEY, None)
        if not changed:
            return
        for subscriber in self._subscribers:
            try:
                subscriber(frozenset(changed))
            except Exception:
                # The change is committed; a device that misses the notice polls anyway.
                log.exception(
                    "notifying %d device(s) of a desired-state change failed", len(changed)
                )

    @staticmethod
    def _after_rollback(session: Session) -> None:
        session.info.pop(_CHANGED_KEY, None)


class LongPollWaiters:
    """Check-ins of this process waiting for their device's desired state to change."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}
        self._waiting: dict[str, int] = {}
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop the waiters run on (the app's, at start-up)."""
        self._loop = loop

    def notify(self, device_ids: Collection[str]) -> None:
        """Wake the waiters of these devices; any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._lock:
            if not any(d in self._events for d in device_ids):
                return
        loop.call_soon_threadsafe(self._wake, device_ids)

    def wake_all(self) -> None:
        """Let every waiter answer now (the server is stopping)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake, list(self._events))

    def _wake(self, device_ids: Iterable[str]) -> None:
        for device_id in device_ids:
            waiter = self._events.get(device_id)
            if waiter is not None:
                waiter.set()

    @contextlib.contextmanager
    def watch(self, device_id: str) -> Iterator[asyncio.Event]:
        """An event set when ``device_id`` is notified, for the duration of the block.

        Read the device's revision inside the block, after this registered the waiter: a
        change committed before that read is seen by it, one after it sets the event.
        """
        with self._lock:
            waiter = self._events.get(device_id)
            if waiter is None or waiter.is_set():
                waiter = self._events[device_id] = asyncio.Event()
            self._waiting[device_id] = self._waiting.get(device_id, 0) + 1
        try:
            yield waiter
        finally:
            with self._lock:
                left = self._waiting[device_id] - 1
                if left:
                    self._waiting[device_id] = left
                else:
                    del self._waiting[device_id]
                    if self._events.get(device_id) is waiter:
                        del self._events[device_id]

    @property
    def waiting(self) -> int:
        with self._lock:
            return sum(self._waiting.values())
