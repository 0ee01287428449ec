"""Agent logs that devices upload after a failed update: stored, listed, searched.

A device sends the tail of its log (the agent keeps it under the cap); the server refuses
anything larger, so a misbehaving device cannot fill the database. Only the newest
``KEEP_PER_DEVICE`` logs of a device are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, defer

from edgeota.server.models import Device, DeviceLog
from edgeota.server.schemas_monitoring import DeviceLogPublic
from edgeota.server.services.errors import NotFoundError
from edgeota.timeutil import as_utc, utcnow

KEEP_PER_DEVICE = 20


def store(
    session: Session,
    device: Device,
    text: str,
    *,
    component: str | None,
    release_id: str | None,
    event: str | None,
) -> DeviceLog:
    row = DeviceLog(
        device_id=device.id,
        component=component,
        release_id=release_id,
        event=event,
        uploaded_at=utcnow(),
        size=len(text.encode("utf-8")),
        text=text,
    )
    session.add(row)
    session.flush()
    old = select(DeviceLog.id).where(DeviceLog.device_id == device.id)
    old = old.order_by(DeviceLog.id.desc()).offset(KEEP_PER_DEVICE)
    stale = list(session.scalars(old))
    if stale:
        session.execute(delete(DeviceLog).where(DeviceLog.id.in_(stale)))
    return row


@dataclass(frozen=True)
class LogQuery:
    device_id: str | None = None
    release_id: str | None = None
    text: str | None = None
    limit: int = 50


def search(session: Session, q: LogQuery) -> list[DeviceLog]:
    """Newest first, without their text (fetch one with :func:`get`)."""
    query = select(DeviceLog).options(defer(DeviceLog.text))
    if q.device_id:
        query = query.where(DeviceLog.device_id == q.device_id)
    if q.release_id:
        query = query.where(DeviceLog.release_id == q.release_id)
    if q.text:
        query = query.where(DeviceLog.text.icontains(q.text, autoescape=True))
    return list(session.scalars(query.order_by(DeviceLog.id.desc()).limit(q.limit)))


def get(session: Session, log_id: int) -> DeviceLog:
    row = session.get(DeviceLog, log_id)
    if row is None:
        raise NotFoundError(f"no device log {log_id}; list them with GET /api/v1/logs")
    return row


def to_public(row: DeviceLog) -> DeviceLogPublic:
    return DeviceLogPublic(
        id=row.id,
        device_id=row.device_id,
        component=row.component,
        release_id=row.release_id,
        event=row.event,
        uploaded_at=as_utc(row.uploaded_at),
        size=row.size,
    )
