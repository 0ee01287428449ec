"""How many requests may use the database at once, so that a burst cannot deadlock them.

A request's session dependency runs in one worker thread and its endpoint in another, and
the request keeps its database connection in between. Were every request let in, a burst
could leave all worker threads waiting for connections held by requests that wait for a
thread: nothing moves until the pool gives up (30 s), and a fleet reconnecting after an
outage sees its check-ins hang. Admitting no more requests than there are worker threads
means every admitted request can have a thread at the same time, so those holding
connections always finish and hand them on; the others wait in the event loop, where a
waiting request costs a coroutine, not a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

# Worker threads left for work that needs no database (artifact streaming, /metrics).
THREADS_KEPT_FREE = 8
_SESSION_KEY = "edgeota.admission"


class Ticket:
    """One admitted request's place; a long-poll lends it back while it waits."""

    def __init__(self, admission: DatabaseAdmission) -> None:
        self._admission = admission
        self.held = True

    def attach(self, session: Session) -> None:
        session.info[_SESSION_KEY] = self

    @staticmethod
    def of(session: Session) -> Ticket:
        """The place the request that owns ``session`` holds."""
        ticket: Ticket = session.info[_SESSION_KEY]
        return ticket

    @asynccontextmanager
    async def lent(self) -> AsyncIterator[None]:
        """Give the place back for a wait that holds no connection, and take it again after."""
        self._admission.give_back()
        self.held = False
        try:
            yield
        finally:
            await self._admission.take()
            self.held = True


class DatabaseAdmission:
    def __init__(self) -> None:
        self._slots: asyncio.Semaphore | None = None
        self.limit = 0
        self.inside = 0  # requests holding a place (for /metrics)
        self.queued = 0  # requests waiting for one

    def bind(self) -> None:
        """At app start-up, in its event loop: size the admission to the worker threads."""
        threads = anyio.to_thread.current_default_thread_limiter().total_tokens
        self.limit = max(1, int(threads) - THREADS_KEPT_FREE)
        self._slots = asyncio.Semaphore(self.limit)

    async def take(self) -> None:
        if self._slots is None:
            raise RuntimeError("DatabaseAdmission.bind() was not called at app start-up")
        self.queued += 1
        try:
            await self._slots.acquire()
        finally:
            self.queued -= 1
        self.inside += 1

    def give_back(self) -> None:
        assert self._slots is not None
        self.inside -= 1
        self._slots.release()

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[Ticket]:
        await self.take()
        ticket = Ticket(self)
        try:
            yield ticket
        finally:
            if ticket.held:
                self.give_back()


@asynccontextmanager
async def without_database(session: Session) -> AsyncIterator[None]:
    """For a long stretch of a request that needs no database (an upload, a wait): its
    connection goes back to the pool and its place to the next request until the end."""
    await run_in_threadpool(session.close)
    async with Ticket.of(session).lent():
        yield
