"""Periodic background work of a server process, run in worker threads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


async def every(interval_s: float, work: Callable[[], object]) -> None:
    """Run ``work`` in a worker thread every ``interval_s`` seconds until cancelled.

    A failure is logged and retried at the next interval. A thread cannot be interrupted:
    when the task is cancelled while ``work`` runs, it ends only once ``work`` has returned,
    so the app's shutdown never closes the database engine under a pass that still holds a
    connection (the connection would be left open and the pass cut off mid-transaction).
    Long passes watch the app's stopping event to end between two jobs.
    """
    while True:
        await asyncio.sleep(interval_s)
        job = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await job
            raise
        except Exception:
            log.exception("background work failed; retrying in %.0f s", interval_s)
