"""The audit trail: every operator action and every rollout decision, with who, what, when.

Entries are written in the transaction of the change they record, so an entry exists exactly
when its change was stored. Rollout decisions are recorded with :data:`ROLLOUT_LOOP` as the
actor; operators appear as ``admin:<token name>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, cast, or_, select
from sqlalchemy.orm import Session

from edgeota.server.models import AuditEntry
from edgeota.server.schemas_monitoring import AuditPublic
from edgeota.timeutil import as_utc, utcnow

ROLLOUT_LOOP = "rollout-loop"


def record(
    session: Session,
    actor: str,
    action: str,
    target_type: str,
    target_id: str | int,
    details: Mapping[str, Any] | None = None,
    *,
    when: datetime | None = None,
) -> None:
    session.add(
        AuditEntry(
            time=when or utcnow(),
            actor=actor[:128],
            action=action[:64],
            target_type=target_type[:32],
            target_id=str(target_id)[:128],
            details=dict(details or {}),
        )
    )


@dataclass(frozen=True)
class AuditQuery:
    actor: str | None = None
    action: str | None = None  # exact, or a prefix ending in "." ("rollout.")
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None  # substring of target or details
    limit: int = 100


def search(session: Session, q: AuditQuery) -> list[AuditEntry]:
    query = select(AuditEntry)
    if q.actor:
        query = query.where(AuditEntry.actor == q.actor)
    if q.action:
        if q.action.endswith("."):
            query = query.where(AuditEntry.action.startswith(q.action, autoescape=True))
        else:
            query = query.where(AuditEntry.action == q.action)
    if q.target_type:
        query = query.where(AuditEntry.target_type == q.target_type)
    if q.target_id:
        query = query.where(AuditEntry.target_id == q.target_id)
    if q.since:
        query = query.where(AuditEntry.time >= q.since)
    if q.until:
        query = query.where(AuditEntry.time < q.until)
    if q.text:
        query = query.where(
            or_(
                AuditEntry.target_id.icontains(q.text, autoescape=True),
                cast(AuditEntry.details, String).icontains(q.text, autoescape=True),
            )
        )
    return list(session.scalars(query.order_by(AuditEntry.id.desc()).limit(q.limit)))


def to_public(entry: AuditEntry) -> AuditPublic:
    return AuditPublic(
        id=entry.id,
        time=as_utc(entry.time),
        actor=entry.actor,
        action=entry.action,
        target_type=entry.target_type,
        target_id=entry.target_id,
        details=entry.details,
    )
