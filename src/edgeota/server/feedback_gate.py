"""Halting a rollout on its users' feedback, on top of ``edgeota.rollout.decide``.

``decide`` judges a rollout by device outcomes only. A rollout may also set
``max_negative_feedback_share``: the rollout loop passes each decision through
:func:`gate`, which turns a running rollout's decision into a halt once the share of its
devices whose newest rating is negative passes the limit (with at least
``feedback_min_count`` devices having rated). The halt is an ordinary ``HALTED`` state with a
``Halt`` action, so resume, abort and rollback treat it like any other halt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from sqlalchemy.orm import Session

from edgeota.rollout import Decision, Halt, RolloutState, RolloutStatus
from edgeota.server.models import Rollout
from edgeota.server.schemas_monitoring import NEGATIVE_RATING_MAX
from edgeota.server.services import feedback


def halt_reason(ratings: Mapping[str, int], max_share: float, min_count: int) -> str | None:
    """Why the feedback halts the rollout, or None while it is within the limit."""
    count = len(ratings)
    if count == 0 or count < min_count:
        return None
    negative = sum(1 for r in ratings.values() if r <= NEGATIVE_RATING_MAX)
    if negative / count <= max_share:
        return None
    return (
        f"negative feedback: {negative} of {count} devices rated the release "
        f"{NEGATIVE_RATING_MAX} or lower ({negative / count:.0%}), above the limit of "
        f"{max_share:.0%}"
    )


def gate(
    state: RolloutState,
    decision: Decision,
    ratings: Mapping[str, int],
    max_share: float,
    min_count: int,
) -> Decision:
    """``decision`` unchanged, or a halt of the rollout as it was read (``state``).

    A halt replaces the whole decision: a halted rollout tells no new device, so the
    decision's own actions (a new phase, devices to tell) are dropped.
    """
    if state.status != RolloutStatus.RUNNING or decision.state.status not in (
        RolloutStatus.RUNNING,
        RolloutStatus.COMPLETED,
    ):
        return decision
    reason = halt_reason(ratings, max_share, min_count)
    if reason is None:
        return decision
    halted = replace(
        state, status=RolloutStatus.HALTED, halt_reason=reason, version=state.version + 1
    )
    told = decision.eligible - frozenset(decision.newly_eligible)
    return Decision(
        state=halted,
        actions=(Halt(reason),),
        eligible=told,
        phase_counts=decision.phase_counts,
    )


def check(session: Session, rollout: Rollout, state: RolloutState, decision: Decision) -> Decision:
    """:func:`gate` with the rollout's stored limit and its devices' ratings."""
    limit = rollout.max_negative_feedback_share
    if limit is None or state.status != RolloutStatus.RUNNING:
        return decision
    ratings = feedback.rollout_ratings(session, rollout.id, state.failures_counted_since)
    return gate(state, decision, ratings, limit, rollout.feedback_min_count)
