"""Rollouts: create, inspect, and command them (pause, resume, abort, fleet rollback).

The decisions themselves are ``edgeota.rollout``'s; the loop that applies them is
``edgeota.server.rollout_loop``. Every change to a rollout's state, by the loop or by a
command here, is a compare-and-set on its state version, so they never overwrite each other.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgeota.rollout import (
    Command,
    DeviceStatus,
    RolloutPlan,
    RolloutState,
    apply_command,
    phase_of,
)
from edgeota.server import rollout_loop, sim_gate
from edgeota.server.artifacts import ArtifactStore
from edgeota.server.models import Release, Rollout, RolloutDevice
from edgeota.server.schemas import RolloutCreate, RolloutPhasePublic, RolloutPublic
from edgeota.server.services import groups, releases, rollback
from edgeota.server.services.errors import ConflictError, InvalidError, NotFoundError
from edgeota.server.services.needs_check import refuse_broken_needs
from edgeota.server.services.retire import refuse_retired
from edgeota.server.services.rollout_codec import (
    LIVE_STATUSES,
    plan_from_json,
    plan_to_json,
    state_from_json,
    state_to_json,
)
from edgeota.timeutil import as_utc

_CAS_ATTEMPTS = 5  # a command retries on a fresh read when the loop wrote in between
_EXAMPLES = 5  # device ids named in an overlap message


def create(session: Session, body: RolloutCreate, created_by: str, now: datetime) -> Rollout:
    release = releases.resolve(session, body.release)
    refuse_retired(release)
    if not groups.exists_group(session, body.group):
        raise NotFoundError(
            f"no group {body.group!r}; define a dynamic one with POST /api/v1/groups, or "
            "enroll devices into a static one"
        )
    targets = set(groups.devices_in_group(session, body.group))
    field_test = _field_test_ids(session, body, targets)
    try:
        # Built (and so checked) before anything is written; the seed is fixed below.
        plan = RolloutPlan.staged(
            body.seed or "unset",
            body.percentages,
            field_test,
            success_share=body.success_share,
            max_failed=body.max_failed,
            max_failed_share=body.max_failed_share,
            soak_seconds=body.soak_s,
            sim_gate_devices=body.sim_gate_devices,
        )
    except ValueError as e:
        raise InvalidError(f"rollout plan: {e}") from e
    _refuse_overlap(session, release, targets)
    refuse_broken_needs(session, release, sorted(targets))
    start_at = now if body.start_at is None else as_utc(body.start_at)
    rollout = _insert(
        session,
        release,
        plan,
        start_at,
        created_by,
        now,
        group=body.group,
        switch_policy=body.switch_policy,
    )
    rollout.max_negative_feedback_share = body.max_negative_feedback_share
    rollout.feedback_min_count = body.feedback_min_count
    if body.seed is None:
        # The rollout id makes a good seed: each rollout spreads devices over phases anew.
        rollout.plan = plan_to_json(replace(plan, seed=f"rollout-{rollout.id}"))
    return rollout


def _insert(
    session: Session,
    release: Release,
    plan: RolloutPlan,
    start_at: datetime,
    created_by: str,
    now: datetime,
    *,
    group: str | None = None,
    device_ids: list[str] | None = None,
    switch_policy: str,
    rollback_of: int | None = None,
) -> Rollout:
    state = RolloutState.scheduled(start_at)
    rollout = Rollout(
        release_id=release.id,
        component=release.component,
        target_group=group,
        target_device_ids=device_ids,
        plan=plan_to_json(plan),
        state=state_to_json(state),
        state_version=state.version,
        status=state.status.value,
        switch_policy=switch_policy,
        start_at=start_at,
        rollback_of=rollback_of,
        created_by=created_by,
        created_at=now,
        updated_at=now,
    )
    session.add(rollout)
    session.flush()
    return rollout


def _field_test_ids(session: Session, body: RolloutCreate, targets: set[str]) -> list[str]:
    if body.field_test_group is not None:
        if not groups.exists_group(session, body.field_test_group):
            raise NotFoundError(f"no field-test group {body.field_test_group!r}")
        chosen = sorted(set(groups.devices_in_group(session, body.field_test_group)) & targets)
        if not chosen:
            raise InvalidError(
                f"field-test group {body.field_test_group!r} has no device in target group "
                f"{body.group!r}; a field test runs on devices of the target"
            )
        return chosen
    chosen = sorted(set(body.field_test_devices or ()))
    outside = [d for d in chosen if d not in targets]
    if outside:
        raise InvalidError(
            f"field-test device(s) {', '.join(outside[:_EXAMPLES])} are not in target group "
            f"{body.group!r} (or are revoked); a field test runs on devices of the target"
        )
    return chosen


def _refuse_overlap(session: Session, release: Release, targets: set[str]) -> None:
    """One live rollout per component and device: two would pull devices between releases."""
    live = session.scalars(
        select(Rollout)
        .where(Rollout.component == release.component, Rollout.status.in_(LIVE_STATUSES))
        .order_by(Rollout.id)
    )
    for other in live:
        theirs = set(rollout_loop.target_device_ids(session, other))
        theirs |= rollout_loop.outcomes(session, other.id).keys()
        common = sorted(targets & theirs)
        if common:
            what = other.target_group or "a fixed device list"
            raise ConflictError(
                f"rollout {other.id} of {other.component} ({other.status}, target {what}) "
                f"already covers {len(common)} of these devices "
                f"({', '.join(common[:_EXAMPLES])}{', …' * (len(common) > _EXAMPLES)}); "
                f"let it complete, or abort it first (edgeota rollout abort {other.id})"
            )


def get(session: Session, rollout_id: int) -> Rollout:
    rollout = rollout_loop.load(session, rollout_id)
    if rollout is None:
        raise NotFoundError(f"no rollout {rollout_id}; list rollouts with `edgeota rollout list`")
    return rollout


def list_all(
    session: Session, status: str | None = None, component: str | None = None
) -> list[Rollout]:
    query = select(Rollout).order_by(Rollout.id.desc())
    if status is not None:
        query = query.where(Rollout.status == status)
    if component is not None:
        query = query.where(Rollout.component == component)
    return list(session.scalars(query))


def command(
    session: Session,
    rollout_id: int,
    cmd: Command,
    now: datetime,
    *,
    store: ArtifactStore,
    signer: releases.TargetSigner,
    by: str,
) -> Rollout:
    """Apply an operator's command with a compare-and-set, re-reading if the loop won."""
    for _ in range(_CAS_ATTEMPTS):
        rollout = get(session, rollout_id)
        state = state_from_json(rollout.state)
        try:
            new = apply_command(cmd, state, now)
        except ValueError as e:
            raise ConflictError(f"rollout {rollout_id}: {e}") from e
        if cmd == Command.ROLLBACK:
            _check_rollback(session, rollout)
        if rollout_loop.compare_and_set(session, rollout_id, rollout.state_version, new, now):
            if cmd == Command.ROLLBACK:
                _start_rollback(session, rollout, now, store, signer, by)
            return get(session, rollout_id)
    raise ConflictError(
        f"rollout {rollout_id} kept changing while applying {cmd}; try the command again"
    )


def _check_rollback(session: Session, rollout: Rollout) -> None:
    release = session.get(Release, rollout.release_id)
    assert release is not None
    rollback.previous_release(session, release)  # raises if there is nothing to go back to
    if not rollout_loop.outcomes(session, rollout.id):
        raise ConflictError(
            f"rollout {rollout.id} has told no device yet: there is nothing to roll back; "
            f"abort it instead (edgeota rollout abort {rollout.id})"
        )


def _start_rollback(
    session: Session,
    rollout: Rollout,
    now: datetime,
    store: ArtifactStore,
    signer: releases.TargetSigner,
    by: str,
) -> Rollout:
    """Publish the previous content as a new release and send every told device to it.

    It goes out as a rollout of its own, of one phase over exactly the devices this one
    told, decided at once in this transaction: the devices are pointed at it by the time
    the command returns, and its progress shows like any rollout's.
    """
    release = session.get(Release, rollout.release_id)
    assert release is not None
    new_release, _ = rollback.republish(session, release, store, signer, by)
    last = plan_from_json(rollout.plan).phases[-1]
    plan = RolloutPlan.staged(
        f"rollback-{rollout.id}",
        (100,),
        success_share=last.success_share,
        max_failed=last.max_failed,
        max_failed_share=last.max_failed_share,
    )
    told = sorted(rollout_loop.outcomes(session, rollout.id))
    back = _insert(
        session,
        new_release,
        plan,
        now,
        by,
        now,
        device_ids=told,
        switch_policy="now",
        rollback_of=rollout.id,
    )
    rollout_loop.tick_rollout(session, back.id, now)
    return back


def to_public(session: Session, rollout: Rollout) -> RolloutPublic:
    plan = plan_from_json(rollout.plan)
    state = state_from_json(rollout.state)
    release = session.get(Release, rollout.release_id)
    assert release is not None
    targets = rollout_loop.target_device_ids(session, rollout)
    sizes = Counter(phase_of(plan, d) for d in targets)
    by_status: Counter[tuple[int, str]] = Counter()
    for index, status, count in session.execute(
        select(RolloutDevice.phase, RolloutDevice.status, func.count())
        .where(RolloutDevice.rollout_id == rollout.id)
        .group_by(RolloutDevice.phase, RolloutDevice.status)
    ):
        by_status[(index, status)] = count
    phases = []
    for index, phase in enumerate(plan.phases):
        counts = {s: by_status[(index, s.value)] for s in DeviceStatus}
        started = state.phase_started_at[index] if index < state.started_phases else None
        phases.append(
            RolloutPhasePublic(
                index=index,
                name=phase.name,
                percent=phase.percent,
                success_share=phase.success_share,
                max_failed=phase.max_failed,
                max_failed_share=phase.max_failed_share,
                soak_s=phase.soak_seconds,
                started_at=started,
                devices=sizes[index],
                told=sum(counts.values()),
                pending=counts[DeviceStatus.PENDING],
                updating=counts[DeviceStatus.UPDATING],
                updated=counts[DeviceStatus.UPDATED],
                failed=counts[DeviceStatus.FAILED],
                rolled_back=counts[DeviceStatus.ROLLED_BACK],
            )
        )
    current = state.current_phase
    return RolloutPublic(
        id=rollout.id,
        release_id=release.id,
        component=release.component,
        version=release.version,
        group=rollout.target_group,
        status=state.status.value,
        halt_reason=state.halt_reason,
        state_version=rollout.state_version,
        current_phase=None if current is None else plan.phases[current].name,
        target_devices=len(targets),
        field_test_devices=sorted(plan.field_test_device_ids),
        phases=phases,
        seed=plan.seed,
        start_at=as_utc(rollout.start_at),
        switch_policy=rollout.switch_policy,
        sim_gate_devices=plan.sim_gate_devices,
        gate=sim_gate.gate_label(plan, state, rollout),
        gate_result=rollout.gate_result,
        rollback_of=rollout.rollback_of,
        max_negative_feedback_share=rollout.max_negative_feedback_share,
        feedback_min_count=rollout.feedback_min_count,
        rolled_back_by=session.scalar(select(Rollout.id).where(Rollout.rollback_of == rollout.id)),
        created_by=rollout.created_by,
        created_at=as_utc(rollout.created_at),
        updated_at=as_utc(rollout.updated_at),
    )
