"""Device endpoints: enrollment, check-in, inventory, events; and the operator's view."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from edgeota.server.deps import AdminDep, ContextDep, DeviceDep, PrincipalDep, SessionDep
from edgeota.server.schemas import (
    DesiredStatePublic,
    DeviceGroupsUpdate,
    DevicePublic,
    EnrollRequest,
    EnrollResponse,
    EventBatch,
    EventBatchResult,
    EventPublic,
    Inventory,
)
from edgeota.server.services import devices, groups
from edgeota.server.services.errors import InvalidError
from edgeota.timeutil import as_utc, utcnow

router = APIRouter(prefix="/api/v1", tags=["devices"])


@router.post("/enroll", response_model=EnrollResponse, status_code=status.HTTP_201_CREATED)
def enroll(body: EnrollRequest, session: SessionDep, ctx: ContextDep) -> EnrollResponse:
    device_id, credential = devices.enroll(
        session, body.enrollment_token, body.name, body.hardware_class
    )
    return EnrollResponse(
        device_id=device_id, credential=credential, poll_interval_s=ctx.settings.poll_interval_s
    )


@router.get(
    "/devices/{device_id}/desired-state",
    response_model=DesiredStatePublic,
    responses={304: {"description": "the desired state has not changed since the given ETag"}},
)
def desired_state(
    device_id: str,
    device: DeviceDep,
    session: SessionDep,
    ctx: ContextDep,
    response: Response,
    if_none_match: Annotated[str | None, Header()] = None,
) -> DesiredStatePublic | Response:
    """The check-in: most answers are a 304 that costs one primary-key read and no write."""
    devices.require_self(device, device_id)
    ctx.last_seen.mark(device.id, utcnow())
    etag = devices.etag_for(device, ctx.settings.poll_interval_s)
    if if_none_match == etag:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    response.headers["ETag"] = etag
    return devices.desired_state(session, device, ctx.settings.poll_interval_s)


@router.put("/devices/{device_id}/inventory", status_code=status.HTTP_204_NO_CONTENT)
def put_inventory(
    device_id: str, body: Inventory, device: DeviceDep, session: SessionDep
) -> Response:
    devices.require_self(device, device_id)
    if body.hardware_class != device.hardware_class:
        raise InvalidError(
            f"inventory says hardware class {body.hardware_class!r} but the device enrolled "
            f"as {device.hardware_class!r}; re-enroll to change it"
        )
    devices.put_inventory(session, device, body)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/devices/{device_id}/events", response_model=EventBatchResult)
def post_events(
    device_id: str, body: EventBatch, device: DeviceDep, session: SessionDep, ctx: ContextDep
) -> EventBatchResult:
    devices.require_self(device, device_id)
    if len(body.events) > ctx.settings.max_events_per_request:
        raise InvalidError(
            f"{len(body.events)} events in one request; send at most "
            f"{ctx.settings.max_events_per_request}"
        )
    return EventBatchResult(accepted_through=devices.record_events(session, device, body.events))


@router.get("/devices", response_model=list[DevicePublic])
def list_devices(
    _: AdminDep, session: SessionDep, group: Annotated[str | None, Query(max_length=64)] = None
) -> list[DevicePublic]:
    return [devices.to_public(session, d) for d in devices.list_all(session, group)]


@router.get("/devices/{device_id}", response_model=DevicePublic)
def get_device(device_id: str, principal: PrincipalDep, session: SessionDep) -> DevicePublic:
    principal.check_device_access(device_id)
    return devices.to_public(session, devices.get(session, device_id))


@router.get("/devices/{device_id}/events", response_model=list[EventPublic])
def get_events(
    device_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EventPublic]:
    principal.check_device_access(device_id)
    devices.get(session, device_id)
    return [
        EventPublic(
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
        for e in devices.list_events(session, device_id, limit)
    ]


@router.post("/devices/{device_id}/revoke", response_model=DevicePublic)
def revoke_device(device_id: str, _: AdminDep, session: SessionDep) -> DevicePublic:
    devices.revoke(session, device_id)
    return devices.to_public(session, devices.get(session, device_id))


@router.put("/devices/{device_id}/groups", response_model=DevicePublic)
def set_groups(
    device_id: str, body: DeviceGroupsUpdate, _: AdminDep, session: SessionDep
) -> DevicePublic:
    device = devices.get(session, device_id)
    groups.check_static_names(session, body.groups)
    devices.set_groups(session, device_id, body.groups)
    return devices.to_public(session, device)
