"""What the dashboard pages show, read in one place (the pages themselves only format it)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgeota.agent.statemachine import State
from edgeota.server.models import Device, DeviceComponent, Feedback, Release, Rollout
from edgeota.server.schemas import DevicePublic, ReleasePublic, RolloutPublic
from edgeota.server.schemas_monitoring import FeedbackSummary
from edgeota.server.services import (
    device_logs,
    devices,
    event_search,
    feedback,
    releases,
    rollouts,
)
from edgeota.server.services.rollout_codec import LIVE_STATUSES
from edgeota.timeutil import utcnow

STATES = [s.value for s in State]
ONLINE_WITHIN = timedelta(minutes=10)
DEVICES_SHOWN = 500
ROLLOUTS_SHOWN = 50


@dataclass
class ComponentCounts:
    """Devices running one component, by installed version and update state."""

    component: str
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # version -> state -> n

    @property
    def total(self) -> int:
        return sum(sum(states.values()) for states in self.rows.values())


def fleet(session: Session) -> dict[str, Any]:
    revoked = Device.revoked_at.is_not(None)
    counts = dict(session.execute(select(revoked, func.count()).group_by(revoked)).all())
    online = session.scalar(
        select(func.count())
        .select_from(Device)
        .where(Device.revoked_at.is_(None), Device.last_seen_at >= utcnow() - ONLINE_WITHIN)
    )
    by_component: dict[str, ComponentCounts] = {}
    for component, version, state, n in session.execute(
        select(
            DeviceComponent.component,
            DeviceComponent.version,
            DeviceComponent.state,
            func.count(),
        )
        .join(Device, Device.id == DeviceComponent.device_id)
        .where(Device.revoked_at.is_(None))
        .group_by(DeviceComponent.component, DeviceComponent.version, DeviceComponent.state)
    ).all():
        entry = by_component.setdefault(component, ComponentCounts(component))
        entry.rows.setdefault(version or "none", defaultdict(int))[state] += n
    live = session.scalars(
        select(Rollout).where(Rollout.status.in_(LIVE_STATUSES)).order_by(Rollout.id.desc())
    )
    failures = event_search.search(
        session,
        event_search.EventQuery(events=tuple(sorted(event_search.FAILURE_EVENTS)), limit=15),
    )
    said = list(session.scalars(select(Feedback).order_by(Feedback.id.desc()).limit(5)))
    return {
        "active": counts.get(False, 0),
        "revoked": counts.get(True, 0),
        "online": online or 0,
        "components": sorted(by_component.values(), key=lambda c: c.component),
        "states": STATES,
        "rollouts": [rollouts.to_public(session, r) for r in live],
        "failures": [event_search.to_public(e) for e in failures],
        "names": device_names(
            session, {e.device_id for e in failures} | {f.device_id for f in said}
        ),
        "releases": release_names(session, {f.release_id for f in said}),
        "feedback": [feedback.to_public(f) for f in said],
    }


def device_names(session: Session, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = session.execute(select(Device.id, Device.name).where(Device.id.in_(ids)))
    return dict(rows.all())


def release_names(session: Session, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = session.execute(
        select(Release.id, Release.component, Release.version).where(Release.id.in_(ids))
    )
    return {rid: f"{component} {version}" for rid, component, version in rows}


def device_list(session: Session) -> list[DevicePublic]:
    return [devices.to_public(session, d) for d in devices.list_all(session)[:DEVICES_SHOWN]]


def device_page(session: Session, device_id: str) -> dict[str, Any]:
    device = devices.get(session, device_id)
    given = list(
        session.scalars(
            select(Feedback).where(Feedback.device_id == device_id).order_by(Feedback.id.desc())
        )
    )
    return {
        "device": devices.to_public(session, device),
        "events": devices.list_events(session, device_id, 200),
        "logs": [
            device_logs.to_public(r)
            for r in device_logs.search(session, device_logs.LogQuery(device_id=device_id))
        ],
        "feedback": [feedback.to_public(f) for f in given],
        "releases": release_names(session, {f.release_id for f in given}),
    }


@dataclass
class ReleaseRow:
    release: ReleasePublic
    feedback: FeedbackSummary | None

    @property
    def variants(self) -> list[str]:
        return sorted({f.variant for f in self.release.files if f.variant})

    @property
    def size(self) -> int:
        return sum(f.length for f in self.release.files)


def release_list(session: Session) -> list[ReleaseRow]:
    summaries = feedback.counts_by_release(session)
    return [
        ReleaseRow(releases.to_public(session, r), summaries.get(r.id))
        for r in releases.list_all(session)
    ]


def release_page(session: Session, release_ref: str) -> dict[str, Any]:
    release = releases.resolve(session, release_ref)
    shown = session.scalars(
        select(Rollout).where(Rollout.release_id == release.id).order_by(Rollout.id.desc())
    )
    return {
        "release": ReleaseRow(releases.to_public(session, release), None),
        "feedback": feedback.for_release(session, release.id),
        "rollouts": [rollouts.to_public(session, r) for r in shown],
    }


def rollout_list(session: Session) -> list[RolloutPublic]:
    found = rollouts.list_all(session)[:ROLLOUTS_SHOWN]
    return [rollouts.to_public(session, r) for r in found]


def rollout_page(session: Session, rollout_id: int) -> dict[str, Any]:
    rollout = rollouts.to_public(session, rollouts.get(session, rollout_id))
    return {
        "rollout": rollout,
        "feedback": feedback.for_release(session, rollout.release_id),
    }
