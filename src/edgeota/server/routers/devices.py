"""Device endpoints: enrollment, check-in, inventory, events; and the operator's view."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from edgeota.server import longpoll
from edgeota.server.deps import AdminDep, ContextDep, DeviceDep, PrincipalDep, SessionDep
from edgeota.server.schemas import (
    DesiredStatePublic,
    DeviceGroupsUpdate,
    DevicePublic,
    DeviceWindowsUpdate,
    EnrollRequest,
    EnrollResponse,
    EventBatch,
    EventBatchResult,
    EventPublic,
    Inventory,
)
from edgeota.server.services import audit, devices, groups, schedules
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
async def desired_state(
    device_id: str,
    device: DeviceDep,
    session: SessionDep,
    ctx: ContextDep,
    request: Request,
    response: Response,
    if_none_match: Annotated[str | None, Header()] = None,
    wait: Annotated[
        int | None, Query(ge=0, le=300, description="long-poll: wait up to this many seconds")
    ] = None,
) -> DesiredStatePublic | Response:
    """The check-in: most answers are a 304 that costs one primary-key read and no write.

    With ``?wait=N`` and the current ETag, the answer comes as soon as the desired state
    changes, or as a 304 after N seconds (at most the server's ``long_poll_max_s``).
    """
    devices.require_self(device, device_id)
    ctx.last_seen.mark(device.id, utcnow())
    etag = devices.etag_for(device, ctx.settings.poll_interval_s)
    if if_none_match == etag:
        wait_s = min(wait or 0, ctx.settings.long_poll_max_s)
        changed = wait_s and await longpoll.wait_for_change(ctx, session, device, wait_s, request)
        if not changed:
            return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
        device = changed
        etag = devices.etag_for(device, ctx.settings.poll_interval_s)
    response.headers["ETag"] = etag
    return await run_in_threadpool(
        devices.desired_state, session, device, ctx.settings.poll_interval_s
    )


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
    ctx.metrics.observe_update_durations(session, device.id, body.events)
    accepted = devices.record_events(session, device, body.events, ctx.clock)
    return EventBatchResult(accepted_through=accepted)


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
def revoke_device(device_id: str, admin: AdminDep, session: SessionDep) -> DevicePublic:
    devices.revoke(session, device_id)
    audit.record(session, admin.name, "device.revoke", "device", device_id)
    return devices.to_public(session, devices.get(session, device_id))


@router.put("/devices/{device_id}/groups", response_model=DevicePublic)
def set_groups(
    device_id: str, body: DeviceGroupsUpdate, admin: AdminDep, session: SessionDep
) -> DevicePublic:
    device = devices.get(session, device_id)
    groups.check_static_names(session, body.groups)
    devices.set_groups(session, device_id, body.groups)
    details = {"groups": sorted(set(body.groups))}
    audit.record(session, admin.name, "device.groups", "device", device_id, details)
    return devices.to_public(session, device)


@router.put("/devices/{device_id}/windows", response_model=DevicePublic)
def set_windows(
    device_id: str, body: DeviceWindowsUpdate, admin: AdminDep, session: SessionDep
) -> DevicePublic:
    """Set when the device may switch to a new release (its maintenance windows, in its time
    zone) and how many times its user may put an update off; no windows: at any time."""
    device = devices.get(session, device_id)
    schedules.set_windows(session, device, body)
    details = {"windows": device.maintenance_windows, "max_deferrals": body.max_deferrals}
    audit.record(session, admin.name, "device.windows", "device", device_id, details)
    return devices.to_public(session, device)
