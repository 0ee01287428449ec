"""Searching device events across the fleet (the per-device list is ``services.devices``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from edgeota.server.models import DeviceEvent
from edgeota.server.schemas_monitoring import DeviceEventPublic
from edgeota.timeutil import as_utc

# Events that end an update attempt badly; their reason is what an operator looks for.
FAILURE_EVENTS = frozenset(
    {
        "download_failed",
        "stage_invalid",
        "update_failed",
        "update_refused",
        "refused",
        "health_failed",
        "rolled_back",
        "attempts_exhausted",
        "runtime_crash_loop",
    }
)


@dataclass(frozen=True)
class EventQuery:
    device_id: str | None = None
    release_id: str | None = None
    component: str | None = None
    events: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None  # case-insensitive substring of the reason or the event name
    limit: int = 100


def search(session: Session, q: EventQuery) -> list[DeviceEvent]:
    """Newest first (by the order the server received them)."""
    query = select(DeviceEvent)
    if q.device_id:
        query = query.where(DeviceEvent.device_id == q.device_id)
    if q.release_id:
        query = query.where(DeviceEvent.release_id == q.release_id)
    if q.component:
        query = query.where(DeviceEvent.component == q.component)
    if q.events:
        query = query.where(DeviceEvent.event.in_(q.events))
    if q.since:
        query = query.where(DeviceEvent.received_at >= q.since)
    if q.until:
        query = query.where(DeviceEvent.received_at < q.until)
    if q.text:
        query = query.where(
            or_(
                DeviceEvent.reason.icontains(q.text, autoescape=True),
                DeviceEvent.event.icontains(q.text, autoescape=True),
            )
        )
    return list(session.scalars(query.order_by(DeviceEvent.id.desc()).limit(q.limit)))


def to_public(e: DeviceEvent) -> DeviceEventPublic:
    return DeviceEventPublic(
        device_id=e.device_id,
        seq=e.seq,
        time=as_utc(e.time),
        received_at=as_utc(e.received_at),
        event=e.event,
        component=e.component,
        state=e.state,
        release_id=e.release_id,
        version=e.version,
        reason=e.reason,
        detail=e.detail,
    )
