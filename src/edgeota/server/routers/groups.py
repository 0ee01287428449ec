"""Groups (static and dynamic) and device tags (operators only)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from edgeota.server.deps import AdminDep, SessionDep
from edgeota.server.schemas import DevicePublic, DeviceTagsUpdate, GroupCreate, GroupPublic
from edgeota.server.services import audit, devices, groups

router = APIRouter(prefix="/api/v1", tags=["groups"])


@router.post("/groups", response_model=GroupPublic, status_code=status.HTTP_201_CREATED)
def create_group(body: GroupCreate, admin: AdminDep, session: SessionDep) -> GroupPublic:
    """A dynamic group (``filter``), or a static one (``devices``: added to their groups)."""
    group = groups.create(session, body, admin.name)
    details = body.model_dump(mode="json", exclude_none=True, exclude={"name"})
    audit.record(session, admin.name, "group.create", "group", body.name, details)
    return group


@router.get("/groups", response_model=list[GroupPublic])
def list_groups(_: AdminDep, session: SessionDep) -> list[GroupPublic]:
    return groups.list_all(session)


@router.get("/groups/{name}", response_model=GroupPublic)
def get_group(name: str, _: AdminDep, session: SessionDep) -> GroupPublic:
    return groups.get(session, name)


@router.get("/groups/{name}/devices", response_model=list[DevicePublic])
def group_devices(name: str, _: AdminDep, session: SessionDep) -> list[DevicePublic]:
    """The group's devices as of now (a dynamic group is resolved on every call)."""
    groups.get(session, name)
    return [
        devices.to_public(session, devices.get(session, d))
        for d in groups.devices_in_group(session, name)
    ]


@router.delete("/groups/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_group(name: str, admin: AdminDep, session: SessionDep) -> Response:
    """Delete a dynamic group (not while a live rollout targets it)."""
    groups.delete_dynamic(session, name)
    audit.record(session, admin.name, "group.delete", "group", name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/devices/{device_id}/tags", response_model=DevicePublic)
def set_tags(
    device_id: str, body: DeviceTagsUpdate, admin: AdminDep, session: SessionDep
) -> DevicePublic:
    """Replace a device's tags (key=value); dynamic groups follow on their next use."""
    groups.set_tags(session, device_id, body.tags)
    details = {"tags": sorted(body.tags)}
    audit.record(session, admin.name, "device.tags", "device", device_id, details)
    return devices.to_public(session, devices.get(session, device_id))
