"""Long-poll check-ins: hold a 304 until the device's desired state changes.

The request gives its database connection and its admission place back before it waits: a
waiting device costs a coroutine, not a connection. It wakes when this process commits a
change for the device (:class:`edgeota.server.notices.LongPollWaiters`), when the client
goes away, or when the wait is over; the device's revision is read again from the database
in every case, so a change made by another server process is found at the latest when the
wait ends.
"""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from edgeota.server.admission import Ticket
from edgeota.server.context import AppContext
from edgeota.server.models import Device


def _fresh(ctx: AppContext, device_id: str) -> Device | None:
    with ctx.sessions() as session:
        return session.get(Device, device_id)


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def wait_for_change(
    ctx: AppContext, session: Session, device: Device, wait_s: float, request: Request
) -> Device | None:
    """The device as re-read once its desired revision moved on; None if it did not within
    ``wait_s`` (or the device was revoked, or the client left)."""
    await run_in_threadpool(session.close)  # the connection goes back to the pool
    with ctx.waiters.watch(device.id) as changed:
        # Registered first, read second: a change committed in between is not missed.
        current = await run_in_threadpool(_fresh, ctx, device.id)
        if current is None or current.revoked_at is not None:
            return None
        if current.desired_revision != device.desired_revision:
            return current
        woken = asyncio.ensure_future(changed.wait())
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            async with Ticket.of(session).lent():  # a waiting request holds no place either
                await asyncio.wait(
                    {woken, gone}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            for task in (woken, gone):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if gone.done() and not gone.cancelled():
            return None
    current = await run_in_threadpool(_fresh, ctx, device.id)
    if current is None or current.revoked_at is not None:
        return None
    if current.desired_revision == device.desired_revision:
        return None
    ctx.metrics.notices.labels("long_poll").inc()
    return current
