"""The simulated-environment gate's runner: a few simulated devices install a release.

The server (``edgeota.server.sim_gate``) enrolls nothing itself: it hands this runner one-time
enrollment tokens into the gate's group, where a deployment makes the release desired. The
devices are real agents, as in ``edgeota sim``; their runtime is simulated, but their health
check runs the release's probe set on its model in this process (onnxruntime), so a release
that cannot produce sane outputs fails here before any real device sees it.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

from edgeota.server.sim_gate import GateJob, GateOutcome
from edgeota.sim.clock import FleetClock
from edgeota.sim.device import SeenEvent, SimDevice, SimEnv
from edgeota.sim.engine import FleetEngine
from edgeota.sim.faults import FaultPlan
from edgeota.sim.network import NetworkStats, shared_transport
from edgeota.sim.population import DeviceSpec
from edgeota.timeutil import utcnow

log = logging.getLogger(__name__)


class _Lost(Exception):
    """The run was taken over by another process, or the server is stopping."""


class SimGateRunner:
    def __init__(self, poll_interval_s: float = 0.5, healthy_passes: int = 2) -> None:
        self.poll_interval_s = poll_interval_s
        self.healthy_passes = healthy_passes  # passes each device must stay healthy after

    def run(self, job: GateJob, alive: Callable[[], bool]) -> GateOutcome:
        stats = NetworkStats()
        verify: ssl.SSLContext | bool = True
        if job.server_url.startswith("https://") and job.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(job.ca_file))
            # The server's own certificate may be the trust anchor (no CA file at hand).
            verify.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        transport = shared_transport(stats, verify=verify, connections=4)
        env = SimEnv(
            server_url=job.server_url,
            root=job.root,
            transport=transport,
            stats=stats,
            faults=FaultPlan(),
            work_dir=job.work_dir,
            poll_interval_s=self.poll_interval_s,
            probe=True,
            seed=job.rollout_id,
        )
        devices = [
            SimDevice(DeviceSpec(i, f"gate-{job.rollout_id}-{i}", hw, "UTC", ()), env, token)
            for i, (hw, token) in enumerate(
                zip(job.hardware_classes, job.enroll_tokens, strict=True)
            )
        ]
        # Real time: the server this gate guards runs on the wall clock.
        clock = FleetClock(utcnow(), 1.0)
        engine = FleetEngine(devices, clock, workers=min(4, len(devices)), seed=job.rollout_id)
        steps_at_end: dict[int, int] = {}

        def done() -> bool:
            if not alive():
                raise _Lost
            for i, d in enumerate(devices):
                if d.outcome(job.release_id) is not None:
                    steps_at_end.setdefault(i, d.steps)
            return len(steps_at_end) == len(devices) and all(
                d.steps >= steps_at_end[i] + self.healthy_passes for i, d in enumerate(devices)
            )

        try:
            engine.start(spread_s=0.5)
            finished = engine.run_until(done, job.timeout_s, check_every_s=0.5)
        except _Lost:
            return GateOutcome(False, "the gate run was interrupted")
        finally:
            engine.close()
            transport.close()
        return _verdict(job, devices, finished)


def _verdict(job: GateJob, devices: list[SimDevice], finished: bool) -> GateOutcome:
    what = f"{job.component} {job.version}"
    bad: list[tuple[SimDevice, str]] = []
    for d in devices:
        events = d.events(job.release_id)
        crash_loop = any(e.event == "runtime_crash_loop" for e in d.events())
        rolled_back = any(e.event == "rolled_back" for e in events)
        outcome = "rolled_back" if rolled_back else d.outcome(job.release_id)
        if outcome == "committed" and not crash_loop:
            continue
        why = _first_reason(events) or outcome or "no answer"
        bad.append((d, f"{d.spec.hardware_class}: {outcome or 'unfinished'}: {why}"))
    summary = {
        "devices": len(devices),
        "healthy": len(devices) - len(bad),
        "hardware_classes": sorted({d.spec.hardware_class for d in devices}),
        "failures": [why[:300] for _, why in bad[:5]],
    }
    if not finished and not bad:
        return GateOutcome(False, f"{what} did not finish installing in time", summary)
    if bad:
        reason = (
            f"{len(bad)} of {len(devices)} simulated devices did not stay healthy on {what} "
            f"({bad[0][1][:300]})"
        )
        return GateOutcome(False, reason, summary)
    reason = f"{len(devices)} simulated devices installed {what} and stayed healthy"
    return GateOutcome(True, reason, summary)


# The events that say best why an update failed, most telling first.
_WHY = ("health_failed", "rolled_back", "download_failed", "update_refused")


def _first_reason(events: list[SeenEvent]) -> str | None:
    for name in _WHY:
        for e in events:
            if e.event == name and e.reason:
                return e.reason
    return None
