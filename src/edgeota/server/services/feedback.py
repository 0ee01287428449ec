"""Device users' feedback on releases: stored once per report, summed per release and rollout.

Feedback counts per device: a user who rates a release twice changes their rating, they do
not vote twice. So every summary counts each device's newest rating of the release.

A rollout with ``max_negative_feedback_share`` halts (see ``rollout_loop``) when more than
that share of its devices' newest ratings are negative (1 or 2), once at least
``feedback_min_count`` of its devices have rated the release. Like failures, feedback given
before an operator resumed a halted rollout no longer counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgeota.server.models import Device, Feedback, Release, Rollout, RolloutDevice
from edgeota.server.schemas_monitoring import (
    NEGATIVE_RATING_MAX,
    FeedbackCreate,
    FeedbackPublic,
    FeedbackSummary,
    ReleaseFeedbackPublic,
    RolloutFeedbackSummary,
)
from edgeota.server.services import releases
from edgeota.server.services.errors import NotFoundError
from edgeota.server.sqlutil import insert_ignoring_conflicts
from edgeota.timeutil import as_utc, utcnow

_RECENT = 50


def submit(session: Session, device: Device, body: FeedbackCreate) -> Feedback:
    """Store a report (a resent one, same ``client_id``, is stored once); return its row."""
    if session.get(Release, body.release_id) is None:
        raise NotFoundError(f"no release {body.release_id!r}: feedback names a published release")
    rollout_id = session.scalar(
        select(RolloutDevice.rollout_id)
        .join(Rollout, Rollout.id == RolloutDevice.rollout_id)
        .where(RolloutDevice.device_id == device.id, Rollout.release_id == body.release_id)
        .order_by(RolloutDevice.rollout_id.desc())
        .limit(1)
    )
    now = utcnow()
    insert_ignoring_conflicts(
        session,
        Feedback,
        [
            {
                "device_id": device.id,
                "client_id": body.client_id,
                "release_id": body.release_id,
                "rollout_id": rollout_id,
                "rating": body.rating,
                "comment": body.comment,
                "time": as_utc(body.time) if body.time else now,
                "received_at": now,
            }
        ],
        conflict_columns=("device_id", "client_id"),
    )
    row = session.scalar(
        select(Feedback).where(
            Feedback.device_id == device.id, Feedback.client_id == body.client_id
        )
    )
    assert row is not None  # inserted above, or by the earlier send of this report
    return row


def _newest_per_device(rows: Iterable[tuple[str, int, int]]) -> dict[str, int]:
    """device -> rating of its newest report, from (device_id, feedback id, rating) rows."""
    newest: dict[str, tuple[int, int]] = {}
    for device_id, fid, rating in rows:
        if device_id not in newest or fid > newest[device_id][0]:
            newest[device_id] = (fid, rating)
    return {d: rating for d, (_, rating) in newest.items()}


def summarize(ratings: Iterable[int]) -> FeedbackSummary:
    return summarize_counts(Counter(ratings))


def summarize_counts(counts: Mapping[int, int]) -> FeedbackSummary:
    """A summary from how many devices gave each rating."""
    total = sum(counts.values())
    negative = sum(n for r, n in counts.items() if r <= NEGATIVE_RATING_MAX)
    return FeedbackSummary(
        count=total,
        average=round(sum(r * n for r, n in counts.items()) / total, 2) if total else None,
        negative=negative,
        negative_share=round(negative / total, 4) if total else None,
        ratings={str(r): counts.get(r, 0) for r in range(1, 6)},
    )


def rollout_ratings(
    session: Session, rollout_id: int, since: datetime | None = None
) -> dict[str, int]:
    """Each device's newest rating of the rollout's release, given after ``since``."""
    query = select(Feedback.device_id, Feedback.id, Feedback.rating).where(
        Feedback.rollout_id == rollout_id
    )
    if since is not None:
        query = query.where(Feedback.received_at >= since)
    return _newest_per_device(session.execute(query).all())


def for_release(session: Session, release_ref: str) -> ReleaseFeedbackPublic:
    release = releases.resolve(session, release_ref)
    rows = session.execute(
        select(Feedback.device_id, Feedback.id, Feedback.rating, Feedback.rollout_id).where(
            Feedback.release_id == release.id
        )
    ).all()
    total = _newest_per_device((d, i, r) for d, i, r, _ in rows)
    by_rollout: dict[int | None, list[tuple[str, int, int]]] = {}
    for d, i, r, rollout_id in rows:
        by_rollout.setdefault(rollout_id, []).append((d, i, r))
    limits = dict(
        session.execute(
            select(Rollout.id, Rollout.max_negative_feedback_share).where(
                Rollout.id.in_([k for k in by_rollout if k is not None])
            )
        ).all()
    )
    summaries = []
    for rollout_id in sorted(by_rollout, key=lambda k: (k is None, -(k or 0))):
        s = summarize(_newest_per_device(by_rollout[rollout_id]).values())
        summaries.append(
            RolloutFeedbackSummary(
                **s.model_dump(),
                rollout_id=rollout_id,
                max_negative_feedback_share=limits.get(rollout_id) if rollout_id else None,
            )
        )
    recent = session.scalars(
        select(Feedback)
        .where(Feedback.release_id == release.id)
        .order_by(Feedback.id.desc())
        .limit(_RECENT)
    )
    return ReleaseFeedbackPublic(
        release_id=release.id,
        component=release.component,
        version=release.version,
        total=summarize(total.values()),
        by_rollout=summaries,
        recent=[to_public(f) for f in recent],
    )


def counts_by_release(session: Session) -> dict[str, FeedbackSummary]:
    """Summaries of every release that has feedback (for the dashboard's list), in SQL."""
    newest = (
        select(func.max(Feedback.id).label("id"))
        .group_by(Feedback.release_id, Feedback.device_id)
        .subquery()
    )
    rows = session.execute(
        select(Feedback.release_id, Feedback.rating, func.count())
        .join(newest, newest.c.id == Feedback.id)
        .group_by(Feedback.release_id, Feedback.rating)
    ).all()
    grouped: dict[str, dict[int, int]] = {}
    for release_id, rating, n in rows:
        grouped.setdefault(release_id, {})[rating] = n
    return {k: summarize_counts(v) for k, v in grouped.items()}


def to_public(f: Feedback) -> FeedbackPublic:
    return FeedbackPublic(
        id=f.id,
        device_id=f.device_id,
        release_id=f.release_id,
        rollout_id=f.rollout_id,
        rating=f.rating,
        comment=f.comment,
        time=as_utc(f.time),
        received_at=as_utc(f.received_at),
    )
