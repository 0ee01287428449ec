"""Groups and tags: which devices a group name stands for.

A **static** group is a set of ``device_groups`` rows, set at enrollment or by an operator.
A **dynamic** group is a stored filter over device tags, hardware class, region (the tag
``region``) and installed component versions; it is resolved whenever it is used, so a
device whose tags or versions change joins or leaves it without anyone editing the group.
One name is one kind: a dynamic group's name cannot also be used as a static group.

Static groups named ``simulated`` or ``simulated-…`` hold simulated devices (the fleet
simulator's, and the simulated-environment gate's). Every other group leaves those devices
out, whatever its filter says, so a simulated device never gets a real rollout.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import ColumnElement, delete, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from edgeota.server.models import (
    Device,
    DeviceComponent,
    DeviceGroup,
    DeviceTag,
    DynamicGroup,
    Rollout,
)
from edgeota.server.schemas import GroupCreate, GroupFilter, GroupPublic, parse_tag
from edgeota.server.services import devices
from edgeota.server.services.errors import ConflictError, NotFoundError
from edgeota.server.services.rollout_codec import LIVE_STATUSES
from edgeota.timeutil import as_utc, utcnow
from edgeota.versionspec import ANY, matches


def set_tags(session: Session, device_id: str, tags: Iterable[str]) -> None:
    """Replace a device's tags; dynamic groups see the change the next time they resolve."""
    devices.get(session, device_id)
    session.execute(delete(DeviceTag).where(DeviceTag.device_id == device_id))
    pairs = dict(parse_tag(t) for t in tags)
    session.add_all(DeviceTag(device_id=device_id, key=k, value=v) for k, v in pairs.items())
    session.flush()


SIMULATED = "simulated"


def is_simulated_group(name: str) -> bool:
    return name == SIMULATED or name.startswith(f"{SIMULATED}-")


def _is_simulated_device() -> ColumnElement[bool]:
    member = aliased(DeviceGroup)  # the outer query may join device_groups itself
    return exists().where(
        member.device_id == Device.id,
        or_(member.group_name == SIMULATED, member.group_name.like(f"{SIMULATED}-%")),
    )


def devices_in_group(session: Session, name: str) -> list[str]:
    """The ids of the enrolled, unrevoked devices in a static or dynamic group, sorted."""
    dynamic = session.get(DynamicGroup, name)
    if dynamic is not None:
        return _resolve(session, GroupFilter.model_validate(dynamic.filter))
    query = (
        select(Device.id)
        .join(DeviceGroup, DeviceGroup.device_id == Device.id)
        .where(DeviceGroup.group_name == name, Device.revoked_at.is_(None))
        .order_by(Device.id)
    )
    if not is_simulated_group(name):
        query = query.where(~_is_simulated_device())
    return list(session.scalars(query))


def exists_group(session: Session, name: str) -> bool:
    if session.get(DynamicGroup, name) is not None:
        return True
    member = session.scalar(
        select(DeviceGroup.device_id).where(DeviceGroup.group_name == name).limit(1)
    )
    return member is not None


def _resolve(session: Session, spec: GroupFilter) -> list[str]:
    query = select(Device.id).where(Device.revoked_at.is_(None), ~_is_simulated_device())
    if spec.hardware_class:
        query = query.where(Device.hardware_class.in_(spec.hardware_class))
    wanted = dict(parse_tag(t) for t in spec.tags)
    if spec.region is not None:
        wanted["region"] = spec.region
    for key, value in wanted.items():
        query = query.where(
            exists().where(
                DeviceTag.device_id == Device.id, DeviceTag.key == key, DeviceTag.value == value
            )
        )
    for component in spec.installed:
        query = query.where(
            exists().where(
                DeviceComponent.device_id == Device.id,
                DeviceComponent.component == component,
                DeviceComponent.version.is_not(None),
            )
        )
    ids = set(session.scalars(query))
    # Version ranges are semver comparisons, which SQL cannot do on strings: the query above
    # narrowed to devices that have each component, the ranges are checked here.
    for component, version_spec in spec.installed.items():
        if version_spec == ANY or not ids:
            continue
        rows = session.execute(
            select(DeviceComponent.device_id, DeviceComponent.version).where(
                DeviceComponent.component == component, DeviceComponent.version.is_not(None)
            )
        )
        ids &= {d for d, version in rows if matches(version, version_spec)}
    return sorted(ids)


def create(session: Session, body: GroupCreate, created_by: str) -> GroupPublic:
    if exists_group(session, body.name):
        raise ConflictError(
            f"group {body.name!r} already exists; list groups with GET /api/v1/groups, "
            "or change a device's static groups with PUT /api/v1/devices/{id}/groups"
        )
    if body.filter is not None:
        if is_simulated_group(body.name):
            raise ConflictError(
                f"group names {SIMULATED!r} and {SIMULATED}-… are reserved for simulated "
                "devices (static groups the fleet simulator enrolls into); choose another name"
            )
        session.add(
            DynamicGroup(
                name=body.name,
                filter=body.filter.model_dump(),
                created_at=utcnow(),
                created_by=created_by,
            )
        )
        session.flush()
        return get(session, body.name)
    for device_id in sorted(set(body.devices or ())):
        devices.get(session, device_id)
        devices.set_groups(session, device_id, [*devices.groups_of(session, device_id), body.name])
    return get(session, body.name)


def get(session: Session, name: str) -> GroupPublic:
    dynamic = session.get(DynamicGroup, name)
    if dynamic is not None:
        return GroupPublic(
            name=name,
            kind="dynamic",
            filter=GroupFilter.model_validate(dynamic.filter),
            devices=len(devices_in_group(session, name)),
            created_at=as_utc(dynamic.created_at),
        )
    if not exists_group(session, name):
        raise NotFoundError(f"no group {name!r}; list groups with GET /api/v1/groups")
    return GroupPublic(
        name=name,
        kind="static",
        filter=None,
        devices=len(devices_in_group(session, name)),
        created_at=None,
    )


def list_all(session: Session) -> list[GroupPublic]:
    static = session.execute(
        select(DeviceGroup.group_name, func.count())
        .join(Device, Device.id == DeviceGroup.device_id)
        .where(Device.revoked_at.is_(None))
        .group_by(DeviceGroup.group_name)
    ).all()
    out = [
        GroupPublic(name=name, kind="static", filter=None, devices=count, created_at=None)
        for name, count in static
    ]
    out.extend(get(session, name) for name in session.scalars(select(DynamicGroup.name)))
    return sorted(out, key=lambda g: g.name)


def delete_dynamic(session: Session, name: str) -> None:
    if session.get(DynamicGroup, name) is None:
        raise NotFoundError(
            f"no dynamic group {name!r}; a static group ends when no device is in it"
        )
    live = session.scalar(
        select(Rollout.id).where(Rollout.target_group == name, Rollout.status.in_(LIVE_STATUSES))
    )
    if live is not None:
        raise ConflictError(
            f"rollout {live} targets group {name!r}; abort it or let it complete first"
        )
    session.execute(delete(DynamicGroup).where(DynamicGroup.name == name))


def check_static_names(session: Session, names: Iterable[str]) -> None:
    """Refuse to use a dynamic group's name as a static group."""
    taken = sorted(
        session.scalars(select(DynamicGroup.name).where(DynamicGroup.name.in_(set(names))))
    )
    if taken:
        raise ConflictError(
            f"{', '.join(taken)}: dynamic group(s); a device is in one by matching its filter, "
            "not by being put into it"
        )
