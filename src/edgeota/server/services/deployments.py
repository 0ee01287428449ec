"""Deployments: point every device of a group at a release (the desired state).

The desired state is materialized per device at deploy time, so the check-in reads one row
per component instead of resolving groups on every poll. A device that joins a group later
gets the group's newest deployment per component at that moment, unless a newer rollout
already chose its release for that component.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from edgeota.server import notices
from edgeota.server.models import (
    Deployment,
    DesiredComponent,
    Device,
    DeviceGroup,
    Release,
    Rollout,
)
from edgeota.server.schemas import DeploymentPublic
from edgeota.server.services.needs_check import refuse_broken_needs
from edgeota.server.services.retire import refuse_retired
from edgeota.timeutil import as_utc, utcnow


def create(session: Session, release: Release, group: str, created_by: str) -> DeploymentPublic:
    device_ids = list(
        session.scalars(
            select(Device.id)
            .join(DeviceGroup, DeviceGroup.device_id == Device.id)
            .where(DeviceGroup.group_name == group, Device.revoked_at.is_(None))
        )
    )
    refuse_retired(release)
    refuse_broken_needs(session, release, device_ids)
    deployment = Deployment(
        release_id=release.id,
        component=release.component,
        group_name=group,
        created_at=utcnow(),
        created_by=created_by,
    )
    session.add(deployment)
    session.flush()
    set_desired(session, device_ids, release, deployment_id=deployment.id)
    return to_public(deployment, release, len(device_ids))


def materialize_for_device(session: Session, device_id: str) -> None:
    """Give a device the newest deployment, per component, of the groups it is in."""
    newest = (
        select(Deployment.component, func.max(Deployment.id).label("id"))
        .join(DeviceGroup, DeviceGroup.group_name == Deployment.group_name)
        .where(DeviceGroup.device_id == device_id)
        .group_by(Deployment.component)
        .subquery()
    )
    rows = session.execute(
        select(Deployment, Release)
        .join(newest, newest.c.id == Deployment.id)
        .join(Release, Release.id == Deployment.release_id)
    ).all()
    for deployment, release in rows:
        current = session.get(DesiredComponent, (device_id, release.component))
        if current is not None and current.rollout_id is not None:
            rollout = session.get(Rollout, current.rollout_id)
            if rollout is not None and as_utc(rollout.created_at) > as_utc(deployment.created_at):
                continue  # the later decision wins
        set_desired(session, [device_id], release, deployment_id=deployment.id)


_CHUNK = 500  # ids per IN (...) list: well below every database's limit on bound parameters


def set_desired(
    session: Session,
    device_ids: Sequence[str],
    release: Release,
    *,
    deployment_id: int | None = None,
    rollout_id: int | None = None,
) -> list[str]:
    """Make ``release`` the desired one for its component on these devices.

    Each device whose desired state changes gets its ``desired_revision`` bumped (its
    check-in ETag), in one UPDATE per chunk of devices. Returns those devices, sorted.
    """
    changed: list[str] = []
    ids = sorted(set(device_ids))
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows = {
            row.device_id: row
            for row in session.scalars(
                select(DesiredComponent).where(
                    DesiredComponent.component == release.component,
                    DesiredComponent.device_id.in_(chunk),
                )
            )
        }
        moved = []
        now = utcnow()
        for device_id in chunk:
            row = rows.get(device_id)
            if row is not None and row.release_id == release.id:
                continue
            if row is None:
                session.add(
                    DesiredComponent(
                        device_id=device_id,
                        component=release.component,
                        release_id=release.id,
                        deployment_id=deployment_id,
                        rollout_id=rollout_id,
                        updated_at=now,
                    )
                )
            else:
                row.release_id = release.id
                row.deployment_id = deployment_id
                row.rollout_id = rollout_id
                row.updated_at = now
            moved.append(device_id)
        if moved:
            session.execute(
                update(Device)
                .where(Device.id.in_(moved))
                .values(desired_revision=Device.desired_revision + 1)
            )
            notices.mark_desired_changed(session, moved)
        changed.extend(moved)
    return changed


def list_all(session: Session) -> list[DeploymentPublic]:
    rows = session.execute(
        select(Deployment, Release)
        .join(Release, Release.id == Deployment.release_id)
        .order_by(Deployment.id.desc())
    ).all()
    out = []
    for deployment, release in rows:
        count = session.scalar(
            select(func.count())
            .select_from(DesiredComponent)
            .where(DesiredComponent.deployment_id == deployment.id)
        )
        out.append(to_public(deployment, release, count or 0))
    return out


def to_public(deployment: Deployment, release: Release, devices: int) -> DeploymentPublic:
    return DeploymentPublic(
        id=deployment.id,
        release_id=release.id,
        component=release.component,
        version=release.version,
        group=deployment.group_name,
        created_at=as_utc(deployment.created_at),
        created_by=deployment.created_by,
        devices=devices,
    )
