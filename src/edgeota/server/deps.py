"""Request dependencies: the session, the caller, and the app's shared objects.

Those that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency in a worker
thread, a thread hop per request for nothing. The one that reads the database
(:func:`get_principal`) stays a plain ``def``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import anyio
from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from edgeota.server.context import AppContext
from edgeota.server.models import Device
from edgeota.server.services import devices, tokens
from edgeota.server.services.errors import ForbiddenError, UnauthorizedError


async def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[AppContext, Depends(get_context)]


async def get_session(ctx: ContextDep) -> AsyncIterator[Session]:
    """The request's transaction, committed when the endpoint returns, rolled back on error.

    Only admitted requests get one (see edgeota.server.admission); the commit, rollback and
    close run in worker threads like the endpoint, never in the event loop.
    """
    async with ctx.db_admission.admitted() as ticket:
        session = ctx.sessions()
        ticket.attach(session)
        try:
            yield session
        except BaseException:
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(_end, session, commit=False)
            raise
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(_end, session, commit=True)


def _end(session: Session, *, commit: bool) -> None:
    """Commit (or roll back) and give the connection back, in one worker-thread hop."""
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


# "function" scope: the transaction commits before the response is sent, so a client that
# got a 2xx reads its own write on its next request (the default ends it after the response).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError(
            "missing credentials: send 'Authorization: Bearer <token>' (an admin token, or "
            "the device credential issued at enrollment)"
        )
    return token.strip()


@dataclass(frozen=True)
class Principal:
    """Who is calling: an operator (admin token) or one device."""

    name: str
    device: Device | None = None

    @property
    def is_admin(self) -> bool:
        return self.device is None

    def check_device_access(self, device_id: str) -> None:
        if self.device is not None:
            devices.require_self(self.device, device_id)


def get_principal(session: SessionDep, token: Annotated[str, Depends(bearer_token)]) -> Principal:
    if token.startswith("dev-"):
        device = devices.authenticate(session, token)
        return Principal(name=device.id, device=device)
    admin = tokens.find_admin(session, token)
    if admin is None:
        raise UnauthorizedError("unknown or revoked token")
    return Principal(name=f"admin:{admin.name}")


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise ForbiddenError("this endpoint needs an admin token; devices may not call it")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]


async def require_device(principal: PrincipalDep) -> Device:
    if principal.device is None:
        raise ForbiddenError("this endpoint is for devices; call it with a device credential")
    return principal.device


DeviceDep = Annotated[Device, Depends(require_device)]
