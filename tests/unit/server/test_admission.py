"""Database admission: at most `limit` requests in, and a long-poll lends its place back."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from edgeota.server import admission
from edgeota.server.admission import DatabaseAdmission


@pytest.fixture
def two_places(monkeypatch: pytest.MonkeyPatch) -> DatabaseAdmission:
    monkeypatch.setattr(admission, "THREADS_KEPT_FREE", 38)  # of the 40 worker threads
    return DatabaseAdmission()


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def _admitted_at_once(gate: DatabaseAdmission, requests: int) -> tuple[int, int]:
    """(let in at once, served in the end) of ``requests`` concurrent requests."""
    inside = served = 0
    leave = asyncio.Event()

    async def request() -> None:
        nonlocal inside, served
        async with gate.admitted():
            inside += 1
            await leave.wait()
            served += 1

    tasks = [asyncio.create_task(request()) for _ in range(requests)]
    await _settle()
    at_once = inside
    leave.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    return at_once, served


def test_admits_no_more_than_the_worker_threads_allow(two_places: DatabaseAdmission) -> None:
    async def scenario() -> tuple[int, int]:
        two_places.bind()
        return await _admitted_at_once(two_places, 5)

    assert asyncio.run(scenario()) == (2, 5)
    assert two_places.limit == 2


def test_a_long_poll_lends_its_place_while_it_waits(two_places: DatabaseAdmission) -> None:
    async def scenario() -> list[str]:
        two_places.bind()
        order: list[str] = []
        waiting = [asyncio.Event(), asyncio.Event()]
        done_waiting = asyncio.Event()

        async def long_poll(n: int) -> None:
            async with two_places.admitted() as ticket:
                async with ticket.lent():
                    waiting[n].set()
                    await done_waiting.wait()
                order.append(f"poll{n} answered")

        async def check_in() -> None:
            async with two_places.admitted():
                order.append("check-in served")

        polls = [asyncio.create_task(long_poll(n)) for n in range(2)]
        for event in waiting:
            await event.wait()
        await asyncio.wait_for(check_in(), 5)  # both places lent: a check-in still gets in
        done_waiting.set()
        await asyncio.gather(*polls)
        return order

    assert asyncio.run(scenario()) == ["check-in served", "poll0 answered", "poll1 answered"]


def test_cancelled_while_taking_its_place_back_gives_back_nothing_twice(
    two_places: DatabaseAdmission,
) -> None:
    async def scenario() -> tuple[int, int]:
        two_places.bind()
        lent = asyncio.Event()
        stop_waiting = asyncio.Event()

        async def long_poll() -> None:
            async with two_places.admitted() as ticket, ticket.lent():
                lent.set()
                await stop_waiting.wait()

        poll = asyncio.create_task(long_poll())
        await lent.wait()
        holders_in = [asyncio.Event(), asyncio.Event()]
        leave = asyncio.Event()

        async def hold(entered: asyncio.Event) -> None:
            async with two_places.admitted():
                entered.set()
                await leave.wait()

        holders = [asyncio.create_task(hold(e)) for e in holders_in]
        for event in holders_in:
            await event.wait()
        stop_waiting.set()  # the poll now waits to take its place back: both are taken
        await _settle()
        poll.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poll
        leave.set()
        await asyncio.gather(*holders)
        return await _admitted_at_once(two_places, 3)

    assert asyncio.run(scenario()) == (2, 3)  # two places, not three


def test_counts_what_metrics_show_admitted_and_queued(two_places: DatabaseAdmission) -> None:
    async def scenario() -> list[tuple[int, int]]:
        two_places.bind()
        leave = asyncio.Event()

        async def request() -> None:
            async with two_places.admitted():
                await leave.wait()

        tasks = [asyncio.create_task(request()) for _ in range(5)]
        await _settle()
        during = (two_places.inside, two_places.queued)
        leave.set()
        await asyncio.gather(*tasks)
        return [during, (two_places.inside, two_places.queued)]

    assert asyncio.run(scenario()) == [(2, 3), (0, 0)]
