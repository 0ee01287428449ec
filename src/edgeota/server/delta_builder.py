"""The delta builder: claim a queued delta job, build the patch, store it, sign it, record it.

Several server processes may share one database, so every step that decides who does what
is one conditional UPDATE:

1. Claim: ``UPDATE delta_jobs SET status='running', claim_token=<new>, claimed_at=now …
   WHERE id=… AND (status='pending' OR (status='running' AND claimed_at < now - timeout))``.
   One process wins; the others see no row changed and move on. A claim older than the
   timeout belongs to a process that died or hangs, and may be taken over; a job taken over
   ``max_attempts`` times is failed instead, so a file that kills its builder cannot keep
   every server busy.
2. Build, with no transaction open: ``edgeota.delta.create_patch`` from the base file to the
   new file, both read from the artifact store; the patch is kept only when it is smaller
   than ``max_ratio`` of the new file; it is stored under its sha256.
3. Sign, then record (as publishing does): the patch target is signed first, then
   ``UPDATE … SET status='done' WHERE id=… AND claim_token=<ours>``. A builder whose claim
   was taken over changes nothing (its signed target names the same path and is harmless).
   Recording a built delta bumps ``desired_revision`` of every device whose desired release
   it belongs to, so their next check-in (a new ETag) lists it.

A failure is recorded on its job with the error, and the queue moves on.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from edgeota.delta import DEFAULT_LEVEL, create_patch
from edgeota.server import notices
from edgeota.server.artifacts import ArtifactStore
from edgeota.server.db import session_scope
from edgeota.server.models import DeltaJob, DesiredComponent, Device, Release, ReleaseFile
from edgeota.server.services.deltas import DeltaStatus, patch_target_path
from edgeota.server.services.releases import TargetSigner
from edgeota.targets import TargetCustom

log = logging.getLogger(__name__)
_ID_CHUNK = 500  # ids per IN (...) list: well below every database's bound-parameter limit

_ERROR_CHARS = 2000
_CANDIDATES = 8  # jobs looked at per claim; losing a race on all of them is rare


@dataclass(frozen=True)
class BuildConfig:
    claim_timeout_s: float = 1800.0  # a claim older than this is taken over
    max_ratio: float = 0.9  # keep a patch only below this share of the new file's length
    max_attempts: int = 3  # claims (take-overs included) before a job is failed
    level: int = DEFAULT_LEVEL  # zstd level of create_patch


@dataclass(frozen=True)
class Claim:
    """A job this process holds, with everything the build and the signature need."""

    job_id: int
    token: str
    release_id: str
    component: str
    version: str
    file: str
    variant: str | None
    hardware: tuple[str, ...]
    needs: dict[str, str]
    base_sha256: str
    new_sha256: str
    new_length: int

    @property
    def target_path(self) -> str:
        return patch_target_path(self.component, self.version, self.file, self.base_sha256)

    def custom(self) -> dict[str, Any]:
        return TargetCustom(
            component=self.component,
            version=self.version,
            release_id=self.release_id,
            role="patch",
            file=self.file,
            variant=self.variant,
            hardware=self.hardware,
            needs=self.needs,
            delta_base=self.base_sha256,
        ).to_custom()


@dataclass(frozen=True)
class Outcome:
    status: DeltaStatus
    error: str | None = None
    sha256: str | None = None
    length: int | None = None


class DeltaBuildError(Exception):
    """A delta cannot be built from what the store holds."""


# -- claiming ----------------------------------------------------------------------------
def _claimable(now: datetime, config: BuildConfig) -> ColumnElement[bool]:
    stale = now - timedelta(seconds=config.claim_timeout_s)
    return or_(
        DeltaJob.status == DeltaStatus.PENDING.value,
        and_(DeltaJob.status == DeltaStatus.RUNNING.value, DeltaJob.claimed_at < stale),
    )


def candidates(session: Session, now: datetime, config: BuildConfig) -> list[int]:
    """Jobs that may be claimed now, oldest first."""
    return list(
        session.scalars(
            select(DeltaJob.id)
            .where(_claimable(now, config))
            .order_by(DeltaJob.id)
            .limit(_CANDIDATES)
        )
    )


def give_up_stale(session: Session, now: datetime, config: BuildConfig) -> int:
    """Fail jobs whose claims went stale ``max_attempts`` times; return how many."""
    stale = now - timedelta(seconds=config.claim_timeout_s)
    result = session.execute(
        update(DeltaJob)
        .where(
            DeltaJob.status == DeltaStatus.RUNNING.value,
            DeltaJob.claimed_at < stale,
            DeltaJob.attempts >= config.max_attempts,
        )
        .values(
            status=DeltaStatus.FAILED.value,
            finished_at=now,
            claim_token=None,
            error=f"no builder finished it in {config.max_attempts} attempts "
            f"of {config.claim_timeout_s:g} s each; see the server logs",
        )
        .execution_options(synchronize_session=False)
    )
    return cast("CursorResult[Any]", result).rowcount


def try_claim(session: Session, job_id: int, now: datetime, config: BuildConfig) -> Claim | None:
    """Claim one job with a conditional UPDATE; None if another process holds it."""
    token = secrets.token_hex(16)
    result = session.execute(
        update(DeltaJob)
        .where(DeltaJob.id == job_id, _claimable(now, config))
        .values(
            status=DeltaStatus.RUNNING.value,
            claim_token=token,
            claimed_at=now,
            attempts=DeltaJob.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if cast("CursorResult[Any]", result).rowcount != 1:
        return None
    row = session.execute(
        select(DeltaJob, Release, ReleaseFile)
        .join(Release, Release.id == DeltaJob.release_id)
        .join(
            ReleaseFile,
            and_(ReleaseFile.release_id == DeltaJob.release_id, ReleaseFile.file == DeltaJob.file),
        )
        .where(DeltaJob.id == job_id)
    ).one()
    job, release, new = row
    return Claim(
        job_id=job.id,
        token=token,
        release_id=release.id,
        component=release.component,
        version=release.version,
        file=new.file,
        variant=new.variant,
        hardware=tuple(release.hardware),
        needs={str(k): str(v) for k, v in release.needs.items()},
        base_sha256=job.base_sha256,
        new_sha256=new.sha256,
        new_length=new.length,
    )


def claim_next(sessions: sessionmaker[Session], now: datetime, config: BuildConfig) -> Claim | None:
    """Claim the oldest claimable job, in a transaction of its own (committed at once, so
    other processes see the claim)."""
    with session_scope(sessions) as session:
        # Read first: an idle queue (the usual case) costs one indexed SELECT, no write.
        ids = candidates(session, now, config)
        if ids and give_up_stale(session, now, config):
            log.warning("delta jobs failed after %d stale claims", config.max_attempts)
            ids = candidates(session, now, config)
    for job_id in ids:
        with session_scope(sessions) as session:
            claim = try_claim(session, job_id, now, config)
        if claim is not None:
            return claim
    return None


# -- building ----------------------------------------------------------------------------
def build(store: ArtifactStore, claim: Claim, config: BuildConfig) -> Outcome:
    """Create, measure and store the patch (no database work: this is the slow part)."""
    base = store.path_for(claim.base_sha256)
    new = store.path_for(claim.new_sha256)
    for path, what in ((base, "base"), (new, "new")):
        if not path.is_file():
            raise DeltaBuildError(
                f"the {what} file of {claim.file!r} ({path.name}) is not in the artifact store"
            )
    with tempfile.TemporaryDirectory(prefix="delta-", dir=store.incoming_dir) as tmp:
        patch = Path(tmp) / "patch"
        info = create_patch(base, new, patch, level=config.level)
        # The store names files by hash; a file changed on disk must not become a signed
        # patch that rebuilds the wrong bytes (devices would refuse it, after downloading it).
        if (info.old_sha256, info.new_sha256) != (claim.base_sha256, claim.new_sha256):
            raise DeltaBuildError(
                f"the stored files of {claim.file!r} do not hash to their names; "
                "the artifact store is corrupted: re-upload them"
            )
        length = patch.stat().st_size
        if length >= config.max_ratio * claim.new_length:
            return Outcome(
                DeltaStatus.SKIPPED,
                error=f"the patch has {length} bytes, not under {config.max_ratio:.0%} of the "
                f"file's {claim.new_length}: devices download the full file",
                length=length,
            )
        sha256, length = store.adopt_file(patch)
    return Outcome(DeltaStatus.DONE, sha256=sha256, length=length)


def finish(
    sessions: sessionmaker[Session],
    signer: TargetSigner,
    claim: Claim,
    outcome: Outcome,
    now: datetime,
) -> bool:
    """Sign (when built) and record the outcome if the claim is still ours; True if recorded."""
    if outcome.status is DeltaStatus.DONE:
        assert outcome.sha256 is not None and outcome.length is not None
        try:
            signer.sign_targets(
                [(claim.target_path, outcome.length, outcome.sha256, claim.custom())]
            )
        except Exception as e:  # recorded on the job; the store keeps the unsigned bytes
            log.exception("delta job %d: signing failed", claim.job_id)
            outcome = Outcome(DeltaStatus.FAILED, error=f"signing the patch target failed: {e}")
    done = outcome.status is DeltaStatus.DONE
    with session_scope(sessions) as session:
        result = session.execute(
            update(DeltaJob)
            .where(
                DeltaJob.id == claim.job_id,
                DeltaJob.claim_token == claim.token,
                DeltaJob.status == DeltaStatus.RUNNING.value,
            )
            .values(
                status=outcome.status.value,
                finished_at=now,
                claim_token=None,
                error=None if outcome.error is None else outcome.error[:_ERROR_CHARS],
                patch_sha256=outcome.sha256,
                patch_length=outcome.length,
                target_path=claim.target_path if done else None,
            )
            .execution_options(synchronize_session=False)
        )
        if cast("CursorResult[Any]", result).rowcount != 1:
            log.warning("delta job %d was taken over while building; result dropped", claim.job_id)
            return False
        if done:
            # The check-in ETag is the device's desired_revision: a new delta is news, told
            # at once to devices that hear notices (a bulk UPDATE fires no ORM events).
            wanting = list(
                session.scalars(
                    select(DesiredComponent.device_id).where(
                        DesiredComponent.release_id == claim.release_id
                    )
                )
            )
            for start in range(0, len(wanting), _ID_CHUNK):
                session.execute(
                    update(Device)
                    .where(Device.id.in_(wanting[start : start + _ID_CHUNK]))
                    .values(desired_revision=Device.desired_revision + 1)
                    .execution_options(synchronize_session=False)
                )
            notices.mark_desired_changed(session, wanting)
    return True


def process_one(
    sessions: sessionmaker[Session],
    store: ArtifactStore,
    signer: TargetSigner,
    config: BuildConfig,
    clock: Callable[[], datetime],
) -> Claim | None:
    """Claim, build and record one job; the claim it worked on, or None if none was due."""
    claim = claim_next(sessions, clock(), config)
    if claim is None:
        return None
    try:
        outcome = build(store, claim, config)
    except Exception as e:  # any failure is the job's, never the loop's
        log.warning(
            "delta job %d (%s of %s) failed: %s", claim.job_id, claim.file, claim.version, e
        )
        outcome = Outcome(DeltaStatus.FAILED, error=f"{type(e).__name__}: {e}")
    if finish(sessions, signer, claim, outcome, clock()):
        log.info("delta job %d: %s %s", claim.job_id, outcome.status.value, claim.target_path)
    return claim


def run_pending(
    sessions: sessionmaker[Session],
    store: ArtifactStore,
    signer: TargetSigner,
    config: BuildConfig,
    clock: Callable[[], datetime],
    stop: threading.Event | None = None,
) -> int:
    """Build jobs one after the other until none is due (or ``stop`` is set); return how many."""
    count = 0
    while stop is None or not stop.is_set():
        if process_one(sessions, store, signer, config, clock) is None:
            break
        count += 1
    return count
