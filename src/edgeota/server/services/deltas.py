"""Deltas of a release: which ones it gets, and what devices and operators see of them.

Publishing a release queues one delta job per file and per earlier copy of that file
(:func:`enqueue`): the same ``file`` name and variant in each of the last K releases of the
component below the new version, when its content differs. ``edgeota.server.delta_builder``
builds the jobs in the background; a ``done`` job is a signed patch target that the desired
state lists for devices, and that the release's admin view shows with every other job.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeota.server.models import DeltaJob, Release, ReleaseFile
from edgeota.server.schemas import ReleaseDeltaPublic
from edgeota.targets import parse_version, target_path
from edgeota.timeutil import utcnow

DEFAULT_HISTORY = 3


class DeltaStatus(StrEnum):
    PENDING = "pending"  # queued, nobody works on it
    RUNNING = "running"  # claimed by one server process at claimed_at
    DONE = "done"  # built, stored and signed: devices are told about it
    FAILED = "failed"  # the build failed; ``error`` says why
    SKIPPED = "skipped"  # built, but not small enough to be worth it


def patch_target_path(component: str, version: str, file: str, base_sha256: str) -> str:
    """``<component>/<version>/deltas/<file>.from-<first 16 hex of the base sha256>.patch``."""
    return target_path(component, version, f"deltas/{file}.from-{base_sha256[:16]}.patch")


def base_releases(session: Session, release: Release, history: int) -> list[Release]:
    """The last ``history`` releases of the component below ``release``, newest first.

    By version, not by publication time: devices only move up, so a lower version is what
    a device may hold when it is told to install ``release``. Retired releases are left out:
    their files may be deleted from the store.
    """
    if history <= 0:
        return []
    new = parse_version(release.version)
    older = [
        r
        for r in session.scalars(
            select(Release).where(
                Release.component == release.component,
                Release.id != release.id,
                Release.retired_at.is_(None),
            )
        )
        if parse_version(r.version) < new
    ]
    older.sort(key=lambda r: parse_version(r.version), reverse=True)
    return older[:history]


def enqueue(session: Session, release: Release, history: int) -> list[DeltaJob]:
    """Queue the delta jobs of a newly published ``release`` (in the caller's transaction)."""
    bases = base_releases(session, release, history)
    if not bases:
        return []
    new_files = list(
        session.scalars(select(ReleaseFile).where(ReleaseFile.release_id == release.id))
    )
    rank = {r.id: i for i, r in enumerate(bases)}
    old_files = sorted(
        session.scalars(select(ReleaseFile).where(ReleaseFile.release_id.in_(list(rank)))),
        key=lambda f: rank[f.release_id],
    )
    now = utcnow()
    jobs: list[DeltaJob] = []
    for new in new_files:
        seen = {new.sha256}  # an unchanged file needs no delta; a repeated base needs one
        for old in old_files:
            if (old.file, old.variant) != (new.file, new.variant) or old.sha256 in seen:
                continue
            seen.add(old.sha256)
            jobs.append(
                DeltaJob(
                    release_id=release.id,
                    file=new.file,
                    base_release_id=old.release_id,
                    base_sha256=old.sha256,
                    status=DeltaStatus.PENDING.value,
                    attempts=0,
                    created_at=now,
                )
            )
    session.add_all(jobs)
    session.flush()
    return jobs


def patch_paths(session: Session, release_ids: Sequence[str]) -> dict[str, list[str]]:
    """The built patch targets of each release (one query on the (release_id, status) index)."""
    if not release_ids:
        return {}
    rows = session.execute(
        select(DeltaJob.release_id, DeltaJob.target_path)
        .where(
            DeltaJob.release_id.in_(list(release_ids)),
            DeltaJob.status == DeltaStatus.DONE.value,
        )
        .order_by(DeltaJob.release_id, DeltaJob.target_path)
    )
    out: dict[str, list[str]] = {}
    for release_id, path in rows:
        if path is not None:
            out.setdefault(release_id, []).append(path)
    return out


def for_release(session: Session, release_id: str) -> list[ReleaseDeltaPublic]:
    jobs = session.scalars(
        select(DeltaJob)
        .where(DeltaJob.release_id == release_id)
        .order_by(DeltaJob.file, DeltaJob.id)
    )
    return [
        ReleaseDeltaPublic(
            file=j.file,
            base_release_id=j.base_release_id,
            base_sha256=j.base_sha256,
            status=j.status,
            target_path=j.target_path,
            sha256=j.patch_sha256,
            length=j.patch_length,
            error=j.error,
        )
        for j in jobs
    ]
