"""The rollout loop: run ``edgeota.rollout.decide`` for every due rollout, and apply it.

One pass over a rollout reads its plan and state, the outcomes of the devices it told, and
its target devices (its group resolved afresh, so a device that joined the group meanwhile
is in it), decides, and applies the decision in the caller's transaction:

1. ``UPDATE rollouts SET state=…, state_version=v+1 WHERE id=… AND state_version=v``. If no
   row matched, another server process (or an operator's command) changed the rollout since
   it was read: this pass is dropped, and the next one decides on what that writer stored.
2. Only then the side effects: each ``SetDesired`` device gets the release as its desired
   state and a PENDING row in ``rollout_devices``, which is also the record that it was told.

So several processes may run the loop over one database: a decision is applied once, and
passes are idempotent (``decide`` returns no action for what was already applied).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, sessionmaker

from edgeota.rollout import (
    ActivatePhase,
    Complete,
    Decision,
    DeviceOutcome,
    DeviceStatus,
    Halt,
    RolloutPlan,
    RolloutState,
    SetDesired,
    decide,
    phase_of,
)
from edgeota.server import feedback_gate
from edgeota.server.db import session_scope
from edgeota.server.models import Device, Release, Rollout, RolloutDevice
from edgeota.server.services import audit, deployments, groups, rollout_outcomes
from edgeota.server.services.rollout_codec import (
    DUE_STATUSES,
    LIVE_STATUSES,
    plan_from_json,
    state_from_json,
    state_to_json,
)
from edgeota.server.sqlutil import insert_ignoring_conflicts
from edgeota.targets import ANY_HARDWARE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """A decision for one rollout, and the state version it was made on."""

    rollout_id: int
    release_id: str
    component: str
    plan: RolloutPlan
    read_version: int
    decision: Decision

    @property
    def changes(self) -> bool:
        return self.decision.state.version != self.read_version


def load(session: Session, rollout_id: int) -> Rollout | None:
    """The rollout as stored now (not as this session may have cached it)."""
    return session.scalar(
        select(Rollout).where(Rollout.id == rollout_id).execution_options(populate_existing=True)
    )


def target_device_ids(session: Session, rollout: Rollout) -> list[str]:
    """The devices the rollout targets now: its group's members, or its fixed list, less
    revoked devices and those whose hardware class the release does not run on (they would
    only refuse it, and count as failures)."""
    if rollout.target_device_ids is None:
        assert rollout.target_group is not None  # a rollout has one of the two
        ids = groups.devices_in_group(session, rollout.target_group)
    else:
        revoked = _revoked(session, rollout.target_device_ids)
        ids = sorted(d for d in rollout.target_device_ids if d not in revoked)
    release = session.get(Release, rollout.release_id)
    assert release is not None  # rollouts reference releases by foreign key
    if ANY_HARDWARE in release.hardware:
        return ids
    unfit = set(
        session.scalars(select(Device.id).where(Device.hardware_class.not_in(release.hardware)))
    )
    return [d for d in ids if d not in unfit]


def _revoked(session: Session, ids: list[str]) -> set[str]:
    # Revoked devices are few: fetching them all avoids an IN list as long as the fleet.
    return set(session.scalars(select(Device.id).where(Device.revoked_at.is_not(None)))) & set(ids)


def outcomes(session: Session, rollout_id: int) -> dict[str, DeviceOutcome]:
    rows = session.execute(
        select(RolloutDevice.device_id, RolloutDevice.status, RolloutDevice.changed_at).where(
            RolloutDevice.rollout_id == rollout_id
        )
    )
    return {d: DeviceOutcome(DeviceStatus(status), changed) for d, status, changed in rows}


def _claimed_elsewhere(session: Session, rollout: Rollout) -> set[str]:
    """Devices another live rollout of the same component has told: they stay with it.

    Creating a rollout refuses overlaps, but dynamic groups move under it; the first rollout
    to tell a device keeps it, so no device is pulled between two releases.
    """
    return set(
        session.scalars(
            select(RolloutDevice.device_id)
            .join(Rollout, Rollout.id == RolloutDevice.rollout_id)
            .where(
                Rollout.component == rollout.component,
                Rollout.id != rollout.id,
                Rollout.status.in_(LIVE_STATUSES),
            )
        )
    )


def evaluate(session: Session, rollout_id: int, now: datetime) -> Evaluation | None:
    """Decide for one rollout without writing anything; None if it does not exist."""
    rollout = load(session, rollout_id)
    if rollout is None:
        return None
    plan = plan_from_json(rollout.plan)
    state = state_from_json(rollout.state)
    told = outcomes(session, rollout_id)
    claimed = _claimed_elsewhere(session, rollout) - told.keys()
    targets = [d for d in target_device_ids(session, rollout) if d not in claimed]
    decision = decide(plan, state, told, targets, now)
    decision = feedback_gate.check(session, rollout, state, decision)
    return Evaluation(
        rollout_id, rollout.release_id, rollout.component, plan, rollout.state_version, decision
    )


def compare_and_set(
    session: Session, rollout_id: int, read_version: int, new: RolloutState, now: datetime
) -> bool:
    """Store ``new`` if the rollout is still at ``read_version``; False if someone else won."""
    result = session.execute(
        update(Rollout)
        .where(Rollout.id == rollout_id, Rollout.state_version == read_version)
        .values(
            state=state_to_json(new),
            state_version=new.version,
            status=new.status.value,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    # synchronize_session=False leaves a cached Rollout as it was read: drop it.
    cached = session.identity_map.get(session.identity_key(Rollout, rollout_id))
    if cached is not None:
        session.expire(cached)
    return cast("CursorResult[Any]", result).rowcount == 1


def apply(session: Session, evaluation: Evaluation, now: datetime) -> bool:
    """Apply a decision; True if it was stored, False if nothing changed or it lost a race."""
    if not evaluation.changes:
        return False
    decision = evaluation.decision
    rid = evaluation.rollout_id
    if not compare_and_set(session, rid, evaluation.read_version, decision.state, now):
        log.info("rollout %d changed while deciding; deciding again on the next pass", rid)
        return False
    for action in decision.actions:
        if isinstance(action, SetDesired):
            _tell(session, evaluation, action.device_ids, now)
        elif isinstance(action, ActivatePhase):
            log.info("rollout %d: phase %d (%s) started", rid, action.index, action.name)
            _audit(session, rid, "phase_started", now, phase=action.index, name=action.name)
        elif isinstance(action, Halt):
            log.warning("rollout %d halted: %s", rid, action.reason)
            _audit(session, rid, "halted", now, reason=action.reason)
        elif isinstance(action, Complete):
            log.info("rollout %d completed", rid)
            _audit(session, rid, "completed", now)
    return True


def _audit(session: Session, rollout_id: int, what: str, now: datetime, **details: Any) -> None:
    """Record one of the loop's own decisions in the audit trail (its actor is the loop)."""
    audit.record(
        session, audit.ROLLOUT_LOOP, f"rollout.{what}", "rollout", rollout_id, details, when=now
    )


def _tell(
    session: Session, evaluation: Evaluation, device_ids: tuple[str, ...], now: datetime
) -> None:
    release = session.get(Release, evaluation.release_id)
    assert release is not None  # rollouts reference releases by foreign key
    deployments.set_desired(session, device_ids, release, rollout_id=evaluation.rollout_id)
    running = rollout_outcomes.already_running(
        session, device_ids, evaluation.component, evaluation.release_id
    )
    insert_ignoring_conflicts(
        session,
        RolloutDevice,
        [
            {
                "rollout_id": evaluation.rollout_id,
                "device_id": d,
                "phase": phase_of(evaluation.plan, d),
                "status": (DeviceStatus.UPDATED if d in running else DeviceStatus.PENDING).value,
                "told_at": now,
                "changed_at": now,
                "last_seq": None,
            }
            for d in device_ids
        ],
        conflict_columns=("rollout_id", "device_id"),
    )


def tick_rollout(session: Session, rollout_id: int, now: datetime) -> Evaluation | None:
    """Decide and apply for one rollout; the evaluation if it changed anything."""
    evaluation = evaluate(session, rollout_id, now)
    if evaluation is not None and apply(session, evaluation, now):
        return evaluation
    return None


def due_rollouts(session: Session) -> list[int]:
    return list(
        session.scalars(
            select(Rollout.id).where(Rollout.status.in_(DUE_STATUSES)).order_by(Rollout.id)
        )
    )


def tick(session: Session, now: datetime) -> list[Evaluation]:
    """One pass over every due rollout in one transaction; the evaluations applied."""
    applied = []
    for rollout_id in due_rollouts(session):
        evaluation = tick_rollout(session, rollout_id, now)
        if evaluation is not None:
            applied.append(evaluation)
    return applied


def run_due(sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> None:
    """The server's background pass: each rollout in its own transaction, so one that fails
    (and is logged) does not hold the others back."""
    with session_scope(sessions) as session:
        ids = due_rollouts(session)
    for rollout_id in ids:
        try:
            with session_scope(sessions) as session:
                tick_rollout(session, rollout_id, clock())
        except Exception:
            log.exception("rollout %d: deciding failed; trying again on the next pass", rollout_id)
