"""Background passes: a cancelled pass ends only after its thread has finished."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from edgeota.server.background import every


def test_cancel_waits_for_the_running_pass_to_return() -> None:
    started = threading.Event()
    release = threading.Event()
    finished: list[str] = []

    def work() -> None:
        started.set()
        release.wait(10)
        finished.append("pass")

    async def scenario() -> list[str]:
        task = asyncio.create_task(every(0, work))
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        # Cancelled while the thread still runs: the task must not end yet.
        done, _ = await asyncio.wait({task}, timeout=0.2)
        seen_while_running = ["ended early"] if done else []
        release.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return seen_while_running + finished

    assert asyncio.run(scenario()) == ["pass"]


def test_a_failing_pass_is_retried() -> None:
    calls: list[int] = []
    third = threading.Event()

    def work() -> None:
        calls.append(1)
        if len(calls) >= 3:
            third.set()
        raise RuntimeError("database away")

    async def scenario() -> None:
        task = asyncio.create_task(every(0, work))
        await asyncio.to_thread(third.wait, 10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert len(calls) >= 3
