"""Prometheus metrics of the server.

Two kinds:

- Fleet figures (devices by component, state and version; rollouts by status; update
  failures by release and reason; feedback) are read from the database when Prometheus
  scrapes, by :class:`FleetCollector`, with a few GROUP BY queries. Every server process
  answers the same, so any one of them may be scraped for them.
- Traffic figures (check-in latency, target bytes and downloads, full files against deltas,
  update durations, notices sent) are counted in the process that served them; Prometheus
  adds them up over the processes it scrapes.

Each app has its own registry, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from edgeota.server.models import Device, DeviceComponent, DeviceEvent, Feedback, Rollout
from edgeota.server.schemas import EventIn
from edgeota.server.services.event_search import FAILURE_EVENTS
from edgeota.timeutil import as_utc

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# An update ends with one of these events; its duration runs from the device's update_found.
UPDATE_END_EVENTS = frozenset({"committed", "rolled_back", "download_failed", "stage_invalid"})
_CHECKIN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_UPDATE_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)


def target_kind(path: str) -> str:
    """``delta`` for a patch target (``…/deltas/<sha256>.<file>.patch``), else ``full``."""
    return "delta" if "/deltas/" in path or path.endswith(".patch") else "full"


class ServerMetrics:
    """The app's registry and the figures counted as requests pass."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.checkin_seconds = Histogram(
            "edgeota_checkin_duration_seconds",
            "Time to answer a device check-in (desired state), by answer and mode.",
            ["status", "mode"],
            buckets=_CHECKIN_BUCKETS,
            registry=r,
        )
        self.target_downloads = Counter(
            "edgeota_target_downloads",
            "Target requests answered with content (200 or 206), full files or deltas.",
            ["kind"],
            registry=r,
        )
        self.target_bytes = Counter(
            "edgeota_target_bytes_served",
            "Bytes of target content sent, full files or deltas.",
            ["kind"],
            registry=r,
        )
        self.update_seconds = Histogram(
            "edgeota_update_duration_seconds",
            "From a device finding an update to its end (device clock), by how it ended.",
            ["component", "outcome"],
            buckets=_UPDATE_BUCKETS,
            registry=r,
        )
        self.notices = Counter(
            "edgeota_notices_published",
            "Notices of a changed desired state, by channel.",
            ["channel"],
            registry=r,
        )
        self.long_polls = Gauge(
            "edgeota_long_polls_waiting", "Check-ins waiting for a change (long-poll).", registry=r
        )
        self.db_admitted = Gauge(
            "edgeota_db_requests_admitted",
            "Requests holding one of the places that may use the database at once.",
            registry=r,
        )
        self.db_queued = Gauge(
            "edgeota_db_requests_queued",
            "Requests waiting for a place to use the database (all places taken).",
            registry=r,
        )

    def attach_fleet(self, sessions: sessionmaker[Session]) -> None:
        self.registry.register(FleetCollector(sessions))

    def observe_update_durations(
        self, session: Session, device_id: str, events: Sequence[EventIn]
    ) -> None:
        """Time each update the batch ends; call before the batch is stored.

        Only events the server has not stored yet count, so a resent batch is not counted
        twice.
        """
        ends = [e for e in events if e.event in UPDATE_END_EVENTS and e.release_id]
        if not ends:
            return
        stored = set(
            session.scalars(
                select(DeviceEvent.seq).where(
                    DeviceEvent.device_id == device_id,
                    DeviceEvent.seq.in_([e.seq for e in ends]),
                )
            )
        )
        starts = {e.release_id: e.time for e in events if e.event == "update_found"}
        for end in ends:
            if end.seq in stored:
                continue
            start = starts.get(end.release_id) or _found_at(session, device_id, end.release_id)
            if start is not None and as_utc(end.time) >= as_utc(start):
                seconds = (as_utc(end.time) - as_utc(start)).total_seconds()
                self.update_seconds.labels(end.component or "", end.event).observe(seconds)


def _found_at(session: Session, device_id: str, release_id: str | None) -> datetime | None:
    return session.scalar(
        select(DeviceEvent.time)
        .where(
            DeviceEvent.device_id == device_id,
            DeviceEvent.release_id == release_id,
            DeviceEvent.event == "update_found",
        )
        .order_by(DeviceEvent.seq.desc())
        .limit(1)
    )


class FleetCollector(Collector):
    """Fleet figures, read from the database at scrape time."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked: the families depend on the data

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "edgeota_fleet_metrics_up", "1 if the fleet figures could be read from the database."
        )
        try:
            with self._sessions() as session:
                families = list(_fleet_families(session))
        except SQLAlchemyError:
            log.exception("reading fleet metrics failed")
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [*families, up]


def _fleet_families(session: Session) -> Iterator[Metric]:
    enrolled = GaugeMetricFamily(
        "edgeota_devices", "Enrolled devices, by whether they are revoked.", labels=["status"]
    )
    revoked = Device.revoked_at.is_not(None)
    counts = dict(session.execute(select(revoked, func.count()).group_by(revoked)).all())
    enrolled.add_metric(["active"], counts.get(False, 0))
    enrolled.add_metric(["revoked"], counts.get(True, 0))
    yield enrolled

    components = GaugeMetricFamily(
        "edgeota_device_components",
        "Unrevoked devices by component, state and installed version.",
        labels=["component", "state", "version"],
    )
    rows = session.execute(
        select(
            DeviceComponent.component,
            DeviceComponent.state,
            DeviceComponent.version,
            func.count(),
        )
        .join(Device, Device.id == DeviceComponent.device_id)
        .where(Device.revoked_at.is_(None))
        .group_by(DeviceComponent.component, DeviceComponent.state, DeviceComponent.version)
    ).all()
    for component, state, version, n in rows:
        components.add_metric([component, state, version or ""], n)
    yield components

    rollouts = GaugeMetricFamily("edgeota_rollouts", "Rollouts by status.", labels=["status"])
    for status, n in session.execute(
        select(Rollout.status, func.count()).group_by(Rollout.status)
    ).all():
        rollouts.add_metric([status], n)
    yield rollouts

    failures = CounterMetricFamily(
        "edgeota_update_failures",
        "Failed updates and rollbacks reported by devices, by release and reason (event).",
        labels=["component", "version", "release_id", "reason"],
    )
    for comp, version, release_id, event, n in session.execute(
        select(
            DeviceEvent.component,
            DeviceEvent.version,
            DeviceEvent.release_id,
            DeviceEvent.event,
            func.count(),
        )
        .where(DeviceEvent.event.in_(sorted(FAILURE_EVENTS)))
        .group_by(
            DeviceEvent.event, DeviceEvent.release_id, DeviceEvent.component, DeviceEvent.version
        )
    ).all():
        failures.add_metric([comp or "", version or "", release_id or "", event], n)
    yield failures

    ratings = CounterMetricFamily(
        "edgeota_feedback",
        "Feedback reports from device users, by release and rating.",
        labels=["release_id", "rating"],
    )
    for release_id, rating, n in session.execute(
        select(Feedback.release_id, Feedback.rating, func.count()).group_by(
            Feedback.release_id, Feedback.rating
        )
    ).all():
        ratings.add_metric([release_id, str(rating)], n)
    yield ratings


class MetricsMiddleware:
    """Times check-ins and counts target bytes, as plain ASGI (no per-request objects).

    Every other request passes through after two string comparisons.
    """

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._checkin_children: dict[tuple[int, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.endswith("/desired-state"):
            await self._checkin(scope, receive, send)
        elif path.startswith("/tuf/targets/"):
            await self._target(scope, receive, send, target_kind(path))
        else:
            await self.app(scope, receive, send)

    async def _checkin(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            mode = "long_poll" if b"wait=" in scope.get("query_string", b"") else "poll"
            elapsed = time.perf_counter() - start
            child = self._checkin_children.get((status, mode))
            if child is None:  # labels() takes a lock: look each child up once
                child = self.metrics.checkin_seconds.labels(str(status), mode)
                self._checkin_children[(status, mode)] = child
            child.observe(elapsed)

    async def _target(self, scope: Scope, receive: Receive, send: Send, kind: str) -> None:
        status = 0
        sent = 0

        async def count(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == "http.response.pathsend":
                sent += os.path.getsize(message["path"])  # noqa: PTH202 (a str from the server)
            await send(message)

        try:
            await self.app(scope, receive, count)
        finally:
            if status in (200, 206):  # not error bodies
                self.metrics.target_downloads.labels(kind).inc()
                self.metrics.target_bytes.labels(kind).inc(sent)
