"""Devices: enrollment, desired state (the check-in), inventory, events, revocation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from edgeota.server import notices, security
from edgeota.server.models import (
    DesiredComponent,
    Device,
    DeviceComponent,
    DeviceEvent,
    DeviceGroup,
    DeviceTag,
    EnrollmentToken,
    Release,
    ReleaseFile,
)
from edgeota.server.schemas import (
    DesiredComponentPublic,
    DesiredStatePublic,
    DeviceComponentPublic,
    DevicePublic,
    EventIn,
    Inventory,
)
from edgeota.server.services import deltas, deployments, rollout_outcomes, schedules, variants
from edgeota.server.services.errors import ForbiddenError, NotFoundError, UnauthorizedError
from edgeota.server.sqlutil import insert_ignoring_conflicts
from edgeota.timeutil import Clock, as_utc, utcnow

_BAD_ENROLLMENT = (
    "enrollment token is unknown, already used or expired; ask an operator for a new one "
    "(edgeota enroll-token create)"
)


def enroll(session: Session, token: str, name: str, hardware_class: str) -> tuple[str, str]:
    """Use a one-time enrollment token; return (device_id, credential)."""
    now = utcnow()
    row = session.scalar(
        select(EnrollmentToken).where(EnrollmentToken.token_hash == security.hash_secret(token))
    )
    if row is None or row.used_at is not None or as_utc(row.expires_at) <= now:
        raise UnauthorizedError(_BAD_ENROLLMENT)
    device_id = security.new_device_id()
    # Conditional UPDATE: of two concurrent enrollments with one token, exactly one wins.
    claimed = session.execute(
        update(EnrollmentToken)
        .where(EnrollmentToken.id == row.id, EnrollmentToken.used_at.is_(None))
        .values(used_at=now, used_by=device_id)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise UnauthorizedError(_BAD_ENROLLMENT)
    secret = security.new_secret()
    session.add(
        Device(
            id=device_id,
            name=name,
            credential_hash=security.hash_secret(secret),
            hardware_class=hardware_class,
            created_at=now,
            revoked_at=None,
            last_seen_at=now,
            inventory={},
            desired_revision=1,
        )
    )
    session.flush()
    set_groups(session, device_id, row.groups)
    return device_id, security.device_credential(device_id, secret)


def authenticate(session: Session, credential: str) -> Device:
    """The device a credential belongs to; UnauthorizedError for unknown or revoked ones."""
    parts = security.split_device_credential(credential)
    device = session.get(Device, parts[0]) if parts else None
    if (
        parts is None
        or device is None
        or not security.secret_matches(parts[1], device.credential_hash)
    ):
        raise UnauthorizedError("unknown device credential; re-enroll the device")
    if device.revoked_at is not None:
        raise UnauthorizedError(
            f"device {device.id} was revoked; it must be enrolled again to receive updates"
        )
    return device


def require_self(device: Device, device_id: str) -> None:
    if device.id != device_id:
        raise ForbiddenError(
            f"device {device.id} may only access its own records, not those of {device_id}"
        )


def get(session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise NotFoundError(f"no device {device_id!r}; list devices with `edgeota devices list`")
    return device


def groups_of(session: Session, device_id: str) -> list[str]:
    return list(
        session.scalars(
            select(DeviceGroup.group_name)
            .where(DeviceGroup.device_id == device_id)
            .order_by(DeviceGroup.group_name)
        )
    )


def tags_of(session: Session, device_id: str) -> list[str]:
    rows = session.execute(
        select(DeviceTag.key, DeviceTag.value)
        .where(DeviceTag.device_id == device_id)
        .order_by(DeviceTag.key)
    )
    return [f"{k}={v}" for k, v in rows]


def set_groups(session: Session, device_id: str, groups: Iterable[str]) -> None:
    session.execute(delete(DeviceGroup).where(DeviceGroup.device_id == device_id))
    session.add_all(DeviceGroup(device_id=device_id, group_name=g) for g in sorted(set(groups)))
    session.flush()
    deployments.materialize_for_device(session, device_id)


def revoke(session: Session, device_id: str) -> None:
    device = get(session, device_id)
    if device.revoked_at is None:
        device.revoked_at = utcnow()


def etag_for(device: Device, poll_interval_s: int) -> str:
    return f'"{device.desired_revision}-{poll_interval_s}"'


def desired_state(session: Session, device: Device, poll_interval_s: int) -> DesiredStatePublic:
    rows = session.execute(
        select(DesiredComponent.component, Release.id, Release.version)
        .join(Release, Release.id == DesiredComponent.release_id)
        .where(DesiredComponent.device_id == device.id)
    ).all()
    components: dict[str, DesiredComponentPublic] = {}
    patches = deltas.patch_paths(session, [release_id for _, release_id, _ in rows])
    policies = schedules.switch_policies(session, device.id)
    for component, release_id, version in rows:
        resolved = variants.resolve(session, device, release_id)
        files = [
            (path, length)
            for file, path, length in session.execute(
                select(ReleaseFile.file, ReleaseFile.target_path, ReleaseFile.length)
                .where(ReleaseFile.release_id == release_id)
                .order_by(ReleaseFile.file)
            )
            if resolved.keeps(file)
        ]
        choice = resolved.choice
        if choice is not None:
            variants.record_change(session, device, component, release_id, version, choice)
        components[component] = DesiredComponentPublic(
            release_id=release_id,
            version=version,
            targets=[path for path, _ in files],
            size_bytes=sum(length for _, length in files),
            deltas=resolved.patches(patches.get(release_id, [])),
            switch_policy=policies.get(component, schedules.NOW),
            variant=None if choice is None else choice.variant,
            status=None if choice is None or choice.variant else choice.status,
            reason=None if choice is None else choice.reason,
        )
    return DesiredStatePublic(
        revision=device.desired_revision,
        poll_interval_s=poll_interval_s,
        components=components,
        schedule=schedules.schedule_of(device),
    )


def put_inventory(session: Session, device: Device, inventory: Inventory) -> None:
    body = inventory.model_dump()
    if variants.fit_changed(device.inventory, body) and variants.choices_for(session, device):
        # The model variant chosen for the device depends on these: a new desired state.
        device.desired_revision += 1
        notices.mark_desired_changed(session, [device.id])
    device.inventory = body
    device.reported_time_zone = inventory.timezone
    device.last_seen_at = utcnow()
    for name, installed in inventory.components.items():
        _upsert_component(
            session,
            device.id,
            name,
            {"version": installed.version, "release_id": installed.release_id},
            state=installed.state,
        )


def record_events(
    session: Session, device: Device, events: Sequence[EventIn], clock: Clock = utcnow
) -> int:
    """Store a batch idempotently (by device and seq); return the highest seq accepted.

    ``clock`` is the rollout engine's: rollout outcomes are compared with its times.
    """
    if not events:
        return -1
    now = clock()
    insert_ignoring_conflicts(
        session,
        DeviceEvent,
        [
            {
                "device_id": device.id,
                "seq": e.seq,
                "time": e.time,
                "received_at": now,
                "component": e.component,
                "event": e.event,
                "state": e.state,
                "release_id": e.release_id,
                "version": e.version,
                "reason": e.reason,
                "detail": e.detail,
            }
            for e in events
        ],
        conflict_columns=("device_id", "seq"),
    )
    for e in sorted(events, key=lambda e: e.seq):
        if e.component is None or e.state is None:
            continue
        installed: dict[str, Any] = {}
        if e.event == "committed":
            installed = {"version": e.version, "release_id": e.release_id}
        _upsert_component(
            session,
            device.id,
            e.component,
            installed,
            state=e.state,
            event=e.event,
            reason=e.reason,
        )
    rollout_outcomes.record(session, device.id, events, now)
    return max(e.seq for e in events)


def _upsert_component(
    session: Session,
    device_id: str,
    component: str,
    installed: dict[str, Any],
    *,
    state: str,
    event: str | None = None,
    reason: str | None = None,
) -> None:
    row = session.get(DeviceComponent, (device_id, component))
    if row is None:
        row = DeviceComponent(
            device_id=device_id,
            component=component,
            version=None,
            release_id=None,
            state=state,
            last_event=None,
            last_reason=None,
            updated_at=utcnow(),
        )
        session.add(row)
    for key, value in installed.items():
        setattr(row, key, value)
    row.state = state
    if event is not None:
        row.last_event = event
        row.last_reason = reason
    row.updated_at = utcnow()


def list_events(session: Session, device_id: str, limit: int) -> list[DeviceEvent]:
    return list(
        session.scalars(
            select(DeviceEvent)
            .where(DeviceEvent.device_id == device_id)
            # In the order the server stored them: the server's own events (variant_chosen)
            # have no place in the device's sequence.
            .order_by(DeviceEvent.id.desc())
            .limit(limit)
        )
    )


def to_public(session: Session, device: Device) -> DevicePublic:
    desired = session.execute(
        select(DesiredComponent.component, Release.version)
        .join(Release, Release.id == DesiredComponent.release_id)
        .where(DesiredComponent.device_id == device.id)
    ).all()
    components = session.scalars(
        select(DeviceComponent)
        .where(DeviceComponent.device_id == device.id)
        .order_by(DeviceComponent.component)
    )
    return DevicePublic(
        id=device.id,
        name=device.name,
        hardware_class=device.hardware_class,
        groups=groups_of(session, device.id),
        tags=tags_of(session, device.id),
        created_at=as_utc(device.created_at),
        revoked=device.revoked_at is not None,
        last_seen_at=None if device.last_seen_at is None else as_utc(device.last_seen_at),
        inventory=device.inventory,
        desired=dict(desired),
        components=[
            DeviceComponentPublic(
                component=c.component,
                version=c.version,
                release_id=c.release_id,
                state=c.state,
                last_event=c.last_event,
                last_reason=c.last_reason,
                updated_at=as_utc(c.updated_at),
            )
            for c in components
        ],
        time_zone=device.time_zone,
        reported_time_zone=device.reported_time_zone,
        windows=schedules.windows_of(device),
        max_deferrals=device.max_deferrals or 0,
        variant_choice=variants.choices_for(session, device),
    )


def list_all(session: Session, group: str | None = None) -> list[Device]:
    query = select(Device).order_by(Device.created_at, Device.id)
    if group is not None:
        query = query.join(DeviceGroup, DeviceGroup.device_id == Device.id).where(
            DeviceGroup.group_name == group
        )
    return list(session.scalars(query))


def flush_last_seen(session: Session, seen: dict[str, Any]) -> None:
    """Write a batch of last-seen times in one statement per device (off the request path)."""
    for device_id, when in seen.items():
        session.execute(update(Device).where(Device.id == device_id).values(last_seen_at=when))
