"""Steps many simulated devices with a few threads, each at its own jittered time.

A heap holds each device's next due time (wall clock); due devices go to a thread pool, at
most ``workers`` at once, and come back with the delay their agent asks for (its poll
interval with jitter and back-off, or less when a maintenance window opens sooner). Threads
suit the work: a pass mostly waits for the server, which runs in another process.
"""

from __future__ import annotations

import heapq
import logging
import queue
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from edgeota.sim.device import SimDevice

log = logging.getLogger(__name__)


@dataclass
class EngineStats:
    steps: int = 0
    late_s: list[float] = field(default_factory=list)  # how late each step started

    def late_p95_s(self) -> float:
        if not self.late_s:
            return 0.0
        ordered = sorted(self.late_s)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


class FleetEngine:
    def __init__(self, devices: Sequence[SimDevice], workers: int = 8, seed: int = 0) -> None:
        self.devices = list(devices)
        self.workers = workers
        self.stats = EngineStats()
        self._rng = random.Random(seed)
        self._heap: list[tuple[float, int]] = []
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sim")
        self._done: queue.Queue[tuple[int, float]] = queue.Queue()
        self._busy: set[int] = set()
        self._due: dict[int, float] = {}

    def reset_stats(self) -> None:
        self.stats = EngineStats()

    def start(self, spread_s: float = 1.0) -> None:
        """Make every device due within the next ``spread_s`` seconds."""
        now = time.monotonic()
        for i in range(len(self.devices)):
            self._push(i, now + self._rng.uniform(0, spread_s))

    def wake_all(self, within_s: float = 0.5) -> None:
        """Bring every idle device's next pass forward to within ``within_s`` seconds."""
        now = time.monotonic()
        for i, due in list(self._due.items()):
            if i not in self._busy and due > now + within_s:
                self._push(i, now + self._rng.uniform(0, within_s))

    def _push(self, i: int, due: float) -> None:
        self._due[i] = due
        heapq.heappush(self._heap, (due, i))

    def _step(self, i: int) -> None:
        try:
            delay = self.devices[i].step()
        except BaseException:  # a worker must always hand its device back
            log.exception("%s: step failed", self.devices[i].spec.name)
            delay = 1.0
        self._done.put((i, delay))

    def run_until(
        self, done: Callable[[], bool], timeout_s: float, check_every_s: float = 0.5
    ) -> bool:
        """Step devices until ``done()`` (checked every ``check_every_s``); False on timeout."""
        deadline = time.monotonic() + timeout_s
        next_check = 0.0
        while True:
            now = time.monotonic()
            if now >= next_check:
                if done():
                    return True
                next_check = now + check_every_s
            if now > deadline:
                return False
            while self._heap and self._heap[0][0] <= now and len(self._busy) < self.workers:
                due, i = heapq.heappop(self._heap)
                if self._due.get(i) != due or i in self._busy:
                    continue  # superseded by an earlier wake-up
                self._busy.add(i)
                self.stats.steps += 1
                self.stats.late_s.append(now - due)
                self._pool.submit(self._step, i)
            waits = [next_check - now, deadline - now]
            if self._heap and len(self._busy) < self.workers:
                waits.append(self._heap[0][0] - now)
            try:
                i, delay = self._done.get(timeout=max(0.001, min(waits)))
            except queue.Empty:
                continue
            while True:
                self._busy.discard(i)
                self._push(i, time.monotonic() + delay)
                try:
                    i, delay = self._done.get_nowait()
                except queue.Empty:
                    break

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for d in self.devices:
            d.close()
