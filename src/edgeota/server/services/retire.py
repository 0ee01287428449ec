"""Retire a release: take its targets out of the signed metadata and free its storage.

Every published release stays listed in ``targets.json`` until it is retired, and every device
downloads that file whenever it changes: a fleet with a long history would fetch more
metadata than model with each refresh. Retiring a release nobody needs any more removes its
files and its delta patches from the signed metadata (one new targets version), deletes the
stored files no other release or patch uses, and marks the release retired. Devices that run
it keep running it; it can no longer be deployed.

``prune`` retires, in one go, every release older than the newest N of its component that
nothing needs (``edgeota release prune``; the server runs it on its own when
``EDGEOTA_RELEASE_KEEP`` is set).

Refused (409) while any device desires the release or a rollout of it has not ended (deploy
another release to those devices first), and for the release a fleet rollback of the newest
release would go back to (its files are what that rollback publishes again).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from edgeota.server.artifacts import ArtifactStore
from edgeota.server.models import DeltaJob, DesiredComponent, Release, ReleaseFile, Rollout
from edgeota.server.services import audit, releases, rollback
from edgeota.server.services.deltas import DeltaStatus
from edgeota.server.services.errors import ConflictError
from edgeota.server.services.rollout_codec import LIVE_STATUSES
from edgeota.timeutil import utcnow


class TargetRemover(Protocol):
    def remove_targets(self, paths: Sequence[str]) -> None: ...


def refuse_retired(release: Release) -> None:
    """Deployments and rollouts of a retired release are refused: its files are not signed."""
    if release.retired_at is not None:
        raise ConflictError(
            f"{release.component} {release.version} ({release.id}) is retired: its files are "
            "no longer signed; publish its content under a new version to ship it again"
        )


def retire(session: Session, release: Release, signer: TargetRemover, store: ArtifactStore) -> int:
    """Retire ``release``; returns the number of stored files deleted (0 when already retired)."""
    if release.retired_at is not None:
        return 0
    check_retirable(session, release)
    return _retire_all(session, [release], signer, store)


def check_retirable(session: Session, release: Release) -> None:
    """ConflictError saying why ``release`` must stay, if it must."""
    wanting = session.scalar(
        select(func.count())
        .select_from(DesiredComponent)
        .where(DesiredComponent.release_id == release.id)
    )
    if wanting:
        raise ConflictError(
            f"{wanting} device(s) still desire {release.component} {release.version}: deploy "
            "another release to them first"
        )
    live = [s.value for s in LIVE_STATUSES]
    rollout = session.scalar(
        select(Rollout.id).where(Rollout.release_id == release.id, Rollout.status.in_(live))
    )
    if rollout is not None:
        raise ConflictError(
            f"rollout {rollout} of {release.component} {release.version} has not ended: "
            "abort it or let it complete first"
        )
    _refuse_rollback_source(session, release)


@dataclass(frozen=True)
class PruneResult:
    retired: list[Release]
    kept: list[tuple[Release, str]]  # beyond the newest ``keep`` but still needed, and why
    files_deleted: int


def beyond_newest(releases: Sequence[Release], keep: int) -> list[Release]:
    """The releases not retired that are older than the newest ``keep`` of their component
    (``releases`` newest version first within each component, as releases.list_all gives)."""
    seen: Counter[str] = Counter()
    older = []
    for r in releases:
        if r.retired_at is not None:
            continue
        seen[r.component] += 1
        if seen[r.component] > keep:
            older.append(r)
    return older


def prune(
    session: Session,
    keep: int,
    signer: TargetRemover,
    store: ArtifactStore,
    component: str | None = None,
    dry_run: bool = False,
) -> PruneResult:
    """Retire every release older than the newest ``keep`` of its component that nothing
    needs any more, in one new targets version; the others are kept, with the reason."""
    if keep < 1:
        raise ValueError("keep must be at least 1: the newest release is always kept")
    retiring, kept = [], []
    for release in beyond_newest(releases.list_all(session, component), keep):
        try:
            check_retirable(session, release)
        except ConflictError as e:
            kept.append((release, str(e)))
        else:
            retiring.append(release)
    freed = 0 if dry_run or not retiring else _retire_all(session, retiring, signer, store)
    return PruneResult(retiring, kept, freed)


PRUNE_ACTOR = "retention"  # the audit trail's actor when the server prunes on its own


def record_pruned(session: Session, actor: str, result: PruneResult) -> None:
    for release in result.retired:
        details = {"component": release.component, "version": release.version, "pruned": True}
        audit.record(session, actor, "release.retire", "release", release.id, details)


def _retire_all(
    session: Session, retiring: Sequence[Release], signer: TargetRemover, store: ArtifactStore
) -> int:
    ids = [r.id for r in retiring]
    files = list(session.scalars(select(ReleaseFile).where(ReleaseFile.release_id.in_(ids))))
    patches = list(
        session.scalars(
            select(DeltaJob).where(DeltaJob.release_id.in_(ids), DeltaJob.target_path.is_not(None))
        )
    )
    # Unsign first, then record: a release marked retired whose targets were still signed
    # could never be unsigned again; the other way round, a retry finishes the job.
    signer.remove_targets([f.target_path for f in files] + [str(p.target_path) for p in patches])
    now = utcnow()
    for release in retiring:
        release.retired_at = now
    # Deltas still queued for them would be signed for releases nobody may install.
    session.execute(
        update(DeltaJob)
        .where(
            DeltaJob.release_id.in_(ids),
            DeltaJob.status.in_([DeltaStatus.PENDING.value, DeltaStatus.RUNNING.value]),
        )
        .values(status=DeltaStatus.FAILED.value, error="the release was retired", claim_token=None)
    )
    session.flush()
    blobs = {f.sha256 for f in files} | {str(p.patch_sha256) for p in patches if p.patch_sha256}
    return sum(store.delete(sha) for sha in sorted(blobs) if not _still_used(session, sha))


def _refuse_rollback_source(session: Session, release: Release) -> None:
    """Keep what a fleet rollback would publish again: the release below the newest one and
    below each release devices desire (its files are the rollback's content)."""
    live = [r for r in releases.list_all(session, release.component) if r.retired_at is None]
    desired = set(
        session.scalars(
            select(DesiredComponent.release_id)
            .where(DesiredComponent.component == release.component)
            .distinct()
        )
    )
    for current in [r for r in live if r.id in desired or r is live[0]]:
        try:
            source = rollback.previous_release(session, current)
        except ConflictError:
            continue
        if source.id == release.id:
            raise ConflictError(
                f"{release.component} {release.version} is what a fleet rollback of "
                f"{current.version} goes back to: it is kept while {current.version} is the "
                "newest release or desired by devices"
            )


def _still_used(session: Session, sha256: str) -> bool:
    """Whether a release not retired lists the file, or a patch is stored under it."""
    listed = session.scalar(
        select(func.count())
        .select_from(ReleaseFile)
        .join(Release, Release.id == ReleaseFile.release_id)
        .where(ReleaseFile.sha256 == sha256, Release.retired_at.is_(None))
    )
    patched = session.scalar(
        select(func.count())
        .select_from(DeltaJob)
        .join(Release, Release.id == DeltaJob.release_id)
        .where(DeltaJob.patch_sha256 == sha256, Release.retired_at.is_(None))
    )
    return bool(listed or patched)
