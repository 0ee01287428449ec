"""Retire a release: take its targets out of the signed metadata and free its storage.

Every published release stays listed in ``targets.json`` until it is retired, and every device
downloads that file whenever it changes: a fleet with a long history would fetch more
metadata than model with each refresh. Retiring a release nobody needs any more removes its
files and its delta patches from the signed metadata (one new targets version), deletes the
stored files no other release or patch uses, and marks the release retired. Devices that run
it keep running it; it can no longer be deployed.

Refused (409) while any device desires the release or a rollout of it has not ended (deploy
another release to those devices first), and for the release a fleet rollback of the newest
release would go back to (its files are what that rollback publishes again).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from edgeota.server.artifacts import ArtifactStore
from edgeota.server.models import DeltaJob, DesiredComponent, Release, ReleaseFile, Rollout
from edgeota.server.services import releases, rollback
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
    files = list(session.scalars(select(ReleaseFile).where(ReleaseFile.release_id == release.id)))
    patches = list(
        session.scalars(
            select(DeltaJob).where(
                DeltaJob.release_id == release.id, DeltaJob.target_path.is_not(None)
            )
        )
    )
    # Unsign first, then record: a release marked retired whose targets were still signed
    # could never be unsigned again; the other way round, a retry finishes the job.
    signer.remove_targets([f.target_path for f in files] + [str(p.target_path) for p in patches])
    release.retired_at = utcnow()
    # Deltas still queued for it would be signed for a release nobody may install.
    session.execute(
        update(DeltaJob)
        .where(
            DeltaJob.release_id == release.id,
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
