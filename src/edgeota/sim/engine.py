"""Steps many simulated devices with a few threads, each at its own simulated instant.

A heap holds each device's next due time (simulated seconds on the run's ``FleetClock``);
due devices go to a thread pool, at most ``workers`` at once. Each step happens at its due
time: the device's agent reads that instant as "now" all through the step, however long the
step takes on the wall clock, and asks for its next step that many simulated seconds later
(its poll interval with jitter and back-off, or less when a maintenance window opens
sooner). The clock itself never runs more than its ``max_lead_s`` past the earliest step
not yet finished, so a loaded machine slows the simulation down rather than making devices
miss what their due time was for. Threads suit the work: a step mostly waits for the
server, which runs in another process.
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
from datetime import datetime
from typing import Protocol

from edgeota.sim.clock import FleetClock
from edgeota.sim.population import DeviceSpec

log = logging.getLogger(__name__)


class FleetDevice(Protocol):
    """What the engine steps: ``edgeota.sim.device.SimDevice``."""

    spec: DeviceSpec

    def step(self, now: datetime) -> float: ...

    def close(self) -> None: ...


@dataclass
class EngineStats:
    steps: int = 0
    late_s: list[float] = field(default_factory=list)  # simulated seconds, clock past due

    def late_p95_s(self) -> float:
        if not self.late_s:
            return 0.0
        ordered = sorted(self.late_s)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


class FleetEngine:
    def __init__(
        self, devices: Sequence[FleetDevice], clock: FleetClock, workers: int = 8, seed: int = 0
    ) -> None:
        self.devices = list(devices)
        self.clock = clock
        self.workers = workers
        self.stats = EngineStats()
        self._rng = random.Random(seed)
        self._heap: list[tuple[float, int]] = []
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sim")
        self._done: queue.Queue[tuple[int, float, float]] = queue.Queue()
        self._busy: dict[int, float] = {}  # device -> due time of its running step
        self._due: dict[int, float] = {}

    def reset_stats(self) -> None:
        self.stats = EngineStats()

    def start(self, spread_s: float) -> None:
        """Make every device due within the next ``spread_s`` simulated seconds."""
        now = self.clock.seconds
        for i in range(len(self.devices)):
            self._push(i, now + self._rng.uniform(0, spread_s))

    def wake_all(self, within_s: float) -> None:
        """Bring every idle device's next step forward to within ``within_s`` simulated
        seconds (as a notice from the server would)."""
        now = self.clock.seconds
        for i, due in list(self._due.items()):
            if i not in self._busy and due > now + within_s:
                self._push(i, now + self._rng.uniform(0, within_s))

    def _push(self, i: int, due: float) -> None:
        self._due[i] = due
        heapq.heappush(self._heap, (due, i))

    def _earliest_waiting(self) -> float | None:
        """The due time of the earliest step not yet started (stale heap entries dropped)."""
        while self._heap:
            due, i = self._heap[0]
            if self._due.get(i) == due and i not in self._busy:
                return due
            heapq.heappop(self._heap)
        return None

    def _earliest_unfinished(self) -> float | None:
        dues = list(self._busy.values())
        waiting = self._earliest_waiting()
        if waiting is not None:
            dues.append(waiting)
        return min(dues, default=None)

    def _step(self, i: int, due: float) -> None:
        try:
            delay = self.devices[i].step(self.clock.at(due))
        except BaseException:  # a worker must always hand its device back
            log.exception("%s: step failed", self.devices[i].spec.name)
            delay = self.clock.scale  # one wall-clock second at full speed
        self._done.put((i, due, delay))

    def run_until(
        self, done: Callable[[], bool], timeout_s: float, check_every_s: float = 0.5
    ) -> bool:
        """Step devices until ``done()`` (checked every ``check_every_s`` wall-clock
        seconds); False when ``timeout_s`` wall-clock seconds pass first."""
        deadline = time.monotonic() + timeout_s
        next_check = 0.0
        while True:
            wall = time.monotonic()
            if wall >= next_check:
                if done():
                    return True
                next_check = wall + check_every_s
            if wall > deadline:
                return False
            now = self.clock.advance(self._earliest_unfinished())
            while len(self._busy) < self.workers:
                due = self._earliest_waiting()
                if due is None or due > now:
                    break
                _, i = heapq.heappop(self._heap)
                self._busy[i] = due
                self.stats.steps += 1
                self.stats.late_s.append(now - due)
                self._pool.submit(self._step, i, due)
            waits = [next_check - wall, deadline - wall]
            due = self._earliest_waiting()
            if due is not None and len(self._busy) < self.workers:
                waits.append(self.clock.wall_seconds(due - now))
            try:
                finished = self._done.get(timeout=max(0.001, min(waits)))
            except queue.Empty:
                continue
            while True:
                i, due, delay = finished
                del self._busy[i]
                self._push(i, due + max(delay, 0.0))
                try:
                    finished = self._done.get_nowait()
                except queue.Empty:
                    break

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for d in self.devices:
            d.close()
