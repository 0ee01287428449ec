"""The simulated-environment gate, run by the server before a rollout's first phase.

A rollout created with ``sim_gate_devices = N`` stays scheduled past its start time
(``edgeota.rollout.gate``) while N simulated devices, enrolled into the reserved static group
``simulated-gate-<rollout id>`` (which real groups leave out), install the release from this
very server and run it. Each pass of :func:`run_due`:

1. applies a finished gate run's result to the rollout with a compare-and-set on its state:
   passed lets the first phase start, failed halts the rollout ("simulated environment: …");
2. starts a run for a due rollout that has none, or whose runner went silent: the run is
   claimed with a conditional UPDATE on ``gate_owner``/``gate_heartbeat_at``, so of several
   server processes sharing one database exactly one runs it, and another takes over if that
   process dies. The run itself goes on in a thread, heartbeating; the devices it enrolled
   are revoked when it ends.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from edgeota.rollout import (
    RolloutPlan,
    RolloutState,
    RolloutStatus,
    awaiting_gate,
    fail_gate,
    gate_pending,
    pass_gate,
)
from edgeota.server import rollout_loop
from edgeota.server.context import AppContext
from edgeota.server.db import session_scope
from edgeota.server.models import Device, Release, Rollout
from edgeota.server.services import audit, deployments, groups, tokens
from edgeota.server.services.rollout_codec import plan_from_json, state_from_json
from edgeota.targets import ANY_HARDWARE
from edgeota.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

GATE_GROUP_PREFIX = f"{groups.SIMULATED}-gate-"
STALE_AFTER_S = 60.0  # a runner that has not heartbeat for this long is taken over
_DEFAULT_HARDWARE = "generic"
_OWNER = f"{socket.gethostname()[:32]}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class GateJob:
    """Everything a runner needs: where the server is, what to install, how many devices."""

    rollout_id: int
    release_id: str
    component: str
    version: str
    hardware_classes: tuple[str, ...]  # one per device
    enroll_tokens: tuple[str, ...]  # one per device, into the gate's group
    server_url: str
    ca_file: Path | None  # trust anchor for an https server_url
    root: bytes  # the TUF root.json to pin
    work_dir: Path
    timeout_s: float


@dataclass(frozen=True)
class GateOutcome:
    passed: bool
    reason: str  # why it failed, or a one-line summary when it passed
    summary: dict[str, Any] = field(default_factory=dict)


class GateRunner(Protocol):
    def run(self, job: GateJob, alive: Callable[[], bool]) -> GateOutcome:
        """Install the release on the job's devices; ``alive()`` heartbeats and says whether
        to go on (False: this process lost the run or is stopping)."""
        ...


def gate_label(plan: RolloutPlan, state: RolloutState, rollout: Rollout) -> str:
    """The gate as operators see it: off, waiting, running, passed, failed or waived."""
    if plan.sim_gate_devices == 0:
        return "off"
    if state.gate is not None:
        return state.gate.value
    if rollout.gate_result is not None:
        return "passed" if rollout.gate_result.get("passed") else "failed"
    return "running" if rollout.gate_owner is not None else "waiting"


def run_due(ctx: AppContext) -> None:
    """One pass over the rollouts whose gate has work: apply results, start runs."""
    now = ctx.clock()
    with session_scope(ctx.sessions) as session:
        candidates = list(
            session.scalars(
                select(Rollout.id).where(
                    Rollout.status.in_((RolloutStatus.SCHEDULED.value, RolloutStatus.PAUSED.value))
                )
            )
        )
    for rollout_id in candidates:
        try:
            with session_scope(ctx.sessions) as session:
                job = _pass(ctx, session, rollout_id, now)
        except Exception:
            log.exception("rollout %d: the gate pass failed; trying again", rollout_id)
            continue
        if job is not None:
            run = threading.Thread(
                target=_run, args=(ctx, job), name=f"gate-{rollout_id}", daemon=True
            )
            run.start()
            ctx.gate_runs[:] = [t for t in ctx.gate_runs if t.is_alive()] + [run]


def wait_for_runs(ctx: AppContext, timeout_s: float) -> list[str]:
    """At shutdown, once ``ctx.stopping`` is set: wait for the gate runs to notice and end, so
    none is cut off holding a database connection. Returns the runs still going."""
    deadline = time.monotonic() + timeout_s
    for run in ctx.gate_runs:
        run.join(max(0.0, deadline - time.monotonic()))
    return [t.name for t in ctx.gate_runs if t.is_alive()]


def _pass(ctx: AppContext, session: Session, rollout_id: int, now: datetime) -> GateJob | None:
    rollout = rollout_loop.load(session, rollout_id)
    if rollout is None:
        return None
    plan, state = plan_from_json(rollout.plan), state_from_json(rollout.state)
    if not gate_pending(plan, state):
        return None
    if rollout.gate_result is not None:
        _apply(session, rollout, state, now)
        return None
    if ctx.gate_runner is None or not awaiting_gate(plan, state, now):
        return None
    if not _claim(session, rollout_id):
        return None
    return _prepare(ctx, session, rollout, plan.sim_gate_devices)


def _apply(session: Session, rollout: Rollout, state: RolloutState, now: datetime) -> None:
    result = rollout.gate_result or {}
    passed = bool(result.get("passed"))
    reason = str(result.get("reason") or "the simulated devices did not stay healthy")
    new = pass_gate(state) if passed else fail_gate(state, reason)
    if rollout_loop.compare_and_set(session, rollout.id, rollout.state_version, new, now):
        what = "gate_passed" if passed else "gate_failed"
        details = {"reason": new.halt_reason if not passed else reason}
        audit.record(
            session, audit.ROLLOUT_LOOP, f"rollout.{what}", "rollout", rollout.id, details, when=now
        )
        log.info("rollout %d: simulated-environment gate %s: %s", rollout.id, what, reason)


def _claim(session: Session, rollout_id: int) -> bool:
    # Liveness is wall-clock time, whatever clock the rollout engine runs on.
    wall = utcnow()
    stale = wall - timedelta(seconds=STALE_AFTER_S)
    claimed = session.execute(
        update(Rollout)
        .where(
            Rollout.id == rollout_id,
            Rollout.gate_result.is_(None),
            or_(Rollout.gate_owner.is_(None), Rollout.gate_heartbeat_at < stale),
        )
        .values(gate_owner=_OWNER, gate_heartbeat_at=wall)
        .execution_options(synchronize_session=False)
    )
    return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]


def _prepare(ctx: AppContext, session: Session, rollout: Rollout, n: int) -> GateJob:
    release = session.get(Release, rollout.release_id)
    assert release is not None  # rollouts reference releases by foreign key
    group = f"{GATE_GROUP_PREFIX}{rollout.id}"
    # A deployment to the (still empty) group: each device gets the release as it enrolls.
    deployments.create(session, release, group, f"gate:rollout-{rollout.id}")
    enroll = tuple(tokens.create_enrollment_token(session, [group], 2 * 3600)[0] for _ in range(n))
    settings = ctx.settings
    ca = settings.gate_ca_file or (settings.tls_cert if settings.tls_cert else None)
    return GateJob(
        rollout_id=rollout.id,
        release_id=release.id,
        component=release.component,
        version=release.version,
        hardware_classes=_hardware(session, rollout, release, n),
        enroll_tokens=enroll,
        server_url=settings.resolved_gate_url,
        ca_file=ca,
        root=(settings.tuf_metadata_dir / "1.root.json").read_bytes(),
        work_dir=settings.data_dir / "gate" / f"rollout-{rollout.id}-{secrets.token_hex(3)}",
        timeout_s=settings.gate_timeout_s,
    )


def _hardware(session: Session, rollout: Rollout, release: Release, n: int) -> tuple[str, ...]:
    """Hardware classes for the gate's devices: those of the rollout's targets, most common
    first, cycled; or the release's own list; or a generic class."""
    classes = [h for h in release.hardware if h != ANY_HARDWARE]
    if not classes:
        targets = set(rollout_loop.target_device_ids(session, rollout))
        counts = Counter(
            hw
            for device_id, hw in session.execute(select(Device.id, Device.hardware_class))
            if device_id in targets
        )
        classes = [hw for hw, _ in counts.most_common()]
    classes = classes or [_DEFAULT_HARDWARE]
    return tuple(classes[i % len(classes)] for i in range(n))


def _run(ctx: AppContext, job: GateJob) -> None:
    runner = ctx.gate_runner
    assert runner is not None

    def alive() -> bool:
        if ctx.stopping.is_set():
            return False
        with session_scope(ctx.sessions) as session:
            kept = session.execute(
                update(Rollout)
                .where(Rollout.id == job.rollout_id, Rollout.gate_owner == _OWNER)
                .values(gate_heartbeat_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            return bool(kept.rowcount == 1)  # type: ignore[attr-defined]

    try:
        outcome = runner.run(job, alive)
    except Exception as e:
        log.exception("rollout %d: the simulated-environment gate crashed", job.rollout_id)
        outcome = GateOutcome(False, f"the gate run failed: {e!r}")
    finally:
        shutil.rmtree(job.work_dir, ignore_errors=True)
    if ctx.stopping.is_set():
        return  # shutting down mid-run: the next process to claim it runs it again
    with session_scope(ctx.sessions) as session:
        session.execute(
            update(Rollout)
            .where(Rollout.id == job.rollout_id, Rollout.gate_owner == _OWNER)
            .values(
                gate_result={
                    "passed": outcome.passed,
                    "reason": outcome.reason,
                    "finished_at": as_utc(ctx.clock()).isoformat(),
                    **outcome.summary,
                }
            )
            .execution_options(synchronize_session=False)
        )
        group = f"{GATE_GROUP_PREFIX}{job.rollout_id}"
        for device_id in groups.devices_in_group(session, group):
            session.execute(
                update(Device).where(Device.id == device_id).values(revoked_at=utcnow())
            )
