"""Searching the fleet's history: device events, the audit trail, and uploaded device logs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from edgeota.server.deps import AdminDep, ContextDep, DeviceDep, PrincipalDep, SessionDep
from edgeota.server.schemas_monitoring import AuditPublic, DeviceEventPublic, DeviceLogPublic
from edgeota.server.services import audit, device_logs, devices, event_search, releases
from edgeota.server.services.errors import InvalidError, PayloadTooLargeError
from edgeota.timeutil import as_utc

router = APIRouter(prefix="/api/v1", tags=["monitoring"])

Limit = Annotated[int, Query(ge=1, le=1000)]
Text = Annotated[str | None, Query(max_length=200, description="case-insensitive substring")]
Short = Annotated[str | None, Query(max_length=128)]
Since = Annotated[datetime | None, Query(description="ISO 8601; a time without zone is UTC")]


def _release_id(session: SessionDep, ref: str | None) -> str | None:
    """A release ID as given, or the ID of ``component@version``."""
    if ref is None or "@" not in ref:
        return ref
    return releases.resolve(session, ref).id


@router.get("/events", response_model=list[DeviceEventPublic])
def search_events(
    _: AdminDep,
    session: SessionDep,
    device: Short = None,
    release: Short = None,
    component: Short = None,
    event: Annotated[list[str] | None, Query(max_length=32)] = None,
    since: Since = None,
    until: Since = None,
    q: Text = None,
    limit: Limit = 100,
) -> list[DeviceEventPublic]:
    """Device events across the fleet, newest first; ``since``/``until`` are server times."""
    found = event_search.search(
        session,
        event_search.EventQuery(
            device_id=device,
            release_id=_release_id(session, release),
            component=component,
            events=tuple(event or ()),
            since=None if since is None else as_utc(since),
            until=None if until is None else as_utc(until),
            text=q,
            limit=limit,
        ),
    )
    return [event_search.to_public(e) for e in found]


@router.get("/audit", response_model=list[AuditPublic])
def search_audit(
    _: AdminDep,
    session: SessionDep,
    actor: Short = None,
    action: Annotated[
        str | None, Query(max_length=64, description="exact, or a prefix ending in '.'")
    ] = None,
    target_type: Annotated[str | None, Query(max_length=32)] = None,
    target: Short = None,
    since: Since = None,
    until: Since = None,
    q: Text = None,
    limit: Limit = 100,
) -> list[AuditPublic]:
    """Operator actions and rollout decisions, newest first."""
    found = audit.search(
        session,
        audit.AuditQuery(
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target,
            since=None if since is None else as_utc(since),
            until=None if until is None else as_utc(until),
            text=q,
            limit=limit,
        ),
    )
    return [audit.to_public(e) for e in found]


@router.post(
    "/devices/{device_id}/logs",
    response_model=DeviceLogPublic,
    status_code=status.HTTP_201_CREATED,
    responses={413: {"description": "the log is larger than the server accepts"}},
)
async def upload_log(
    device_id: str,
    request: Request,
    device: DeviceDep,
    session: SessionDep,
    ctx: ContextDep,
    component: Annotated[str | None, Query(max_length=64)] = None,
    release_id: Annotated[str | None, Query(max_length=64)] = None,
    event: Annotated[str | None, Query(max_length=64)] = None,
) -> DeviceLogPublic:
    """A device's own agent log (plain UTF-8 text, its tail), after an update failed."""
    devices.require_self(device, device_id)
    cap = ctx.settings.device_log_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise PayloadTooLargeError(f"log of {declared} bytes; send at most its last {cap} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise PayloadTooLargeError(f"log larger than {cap} bytes; send only its tail")
    if not body:
        raise InvalidError("empty log: send the log text as the request body")
    text = body.decode("utf-8", errors="replace")
    row = await run_in_threadpool(
        device_logs.store,
        session,
        device,
        text,
        component=component,
        release_id=release_id,
        event=event,
    )
    return device_logs.to_public(row)


@router.get("/devices/{device_id}/logs", response_model=list[DeviceLogPublic])
def list_device_logs(
    device_id: str, principal: PrincipalDep, session: SessionDep, limit: Limit = 50
) -> list[DeviceLogPublic]:
    principal.check_device_access(device_id)
    devices.get(session, device_id)
    query = device_logs.LogQuery(device_id=device_id, limit=limit)
    return [device_logs.to_public(r) for r in device_logs.search(session, query)]


@router.get("/logs", response_model=list[DeviceLogPublic])
def search_logs(
    _: AdminDep,
    session: SessionDep,
    device: Short = None,
    release: Short = None,
    q: Text = None,
    limit: Limit = 50,
) -> list[DeviceLogPublic]:
    """Uploaded device logs, newest first; ``q`` searches their text."""
    query = device_logs.LogQuery(
        device_id=device, release_id=_release_id(session, release), text=q, limit=limit
    )
    return [device_logs.to_public(r) for r in device_logs.search(session, query)]


@router.get("/logs/{log_id}", response_class=PlainTextResponse)
def get_log(log_id: int, _: AdminDep, session: SessionDep) -> PlainTextResponse:
    return PlainTextResponse(device_logs.get(session, log_id).text)
