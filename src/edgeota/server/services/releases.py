"""Releases: validate, derive the content ID, sign the targets, record.

A release's ID is derived from everything a device acts on (component, version, files with
their hashes, roles and tolerances, hardware, needs), so two different contents can never
share an ID and publishing the same content twice is a no-op.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeota.server.artifacts import ArtifactStore
from edgeota.server.models import Release, ReleaseFile
from edgeota.server.schemas import ReleaseCreate, ReleaseFilePublic, ReleasePublic
from edgeota.server.services import deltas, variants
from edgeota.server.services.errors import ConflictError, InvalidError, NotFoundError
from edgeota.targets import TargetCustom, parse_version, target_path
from edgeota.timeutil import as_utc, utcnow


class TargetSigner(Protocol):
    """The part of the TUF repository that publishing needs."""

    def sign_targets(self, targets: Sequence[tuple[str, int, str, dict[str, object]]]) -> None:
        """Add (path, length, sha256, custom) targets and re-sign targets/snapshot/timestamp."""


def release_id_for(body: ReleaseCreate) -> str:
    canonical = {
        "component": body.component,
        "version": body.version,
        "hardware": sorted(body.hardware),
        "needs": dict(sorted(body.needs.items())),
        "files": sorted(
            (
                f.file,
                f.role,
                f.sha256,
                f.length,
                f.variant,
                sorted((f.tolerance or {}).items()),
                *variants.id_parts(f),
            )
            for f in body.files
        ),
    }
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return "rel-" + hashlib.sha256(blob).hexdigest()[:24]


def publish(
    session: Session,
    body: ReleaseCreate,
    store: ArtifactStore,
    signer: TargetSigner,
    created_by: str,
    *,
    delta_history: int = deltas.DEFAULT_HISTORY,
) -> tuple[Release, bool]:
    """Publish a release; return it and whether it is new (False: same content existed).

    A new release also gets its delta jobs queued, in the same transaction, from the last
    ``delta_history`` releases of the component (see ``services.deltas``).
    """
    release_id = release_id_for(body)
    existing = session.scalar(
        select(Release).where(Release.component == body.component, Release.version == body.version)
    )
    if existing is not None:
        if existing.id == release_id and existing.retired_at is not None:
            raise ConflictError(
                f"{body.component} {body.version} was published and retired; publish its "
                "content under a new version"
            )
        if existing.id == release_id:
            return existing, False
        raise ConflictError(
            f"{body.component} {body.version} is already published with other content "
            f"(release {existing.id}); publish the new content under a higher version"
        )
    _check_files(body, store)
    variants.check_release_files(body)
    for f in body.files:
        if f.tolerance is not None and f.role != "probe":
            raise InvalidError(f"file {f.file!r}: only the probe set may carry a tolerance")

    customs = [
        TargetCustom(
            component=body.component,
            version=body.version,
            release_id=release_id,
            role=f.role,
            file=f.file,
            variant=f.variant,
            hardware=tuple(body.hardware),
            needs=dict(body.needs),
            tolerance=f.tolerance,
            memory_mb=f.memory_mb,
            quality=f.quality,
            arch=None if f.arch is None else tuple(f.arch),
            accelerator=f.accelerator,
        )
        for f in body.files
    ]
    # Sign first, then record: a signed target without a row is harmless (re-publishing is
    # idempotent), a row whose targets are not signed would be an uninstallable release.
    signer.sign_targets(
        [
            (target_path(body.component, body.version, f.file), f.length, f.sha256, c.to_custom())
            for f, c in zip(body.files, customs, strict=True)
        ]
    )
    release = Release(
        id=release_id,
        component=body.component,
        version=body.version,
        hardware=list(body.hardware),
        needs=dict(body.needs),
        created_at=utcnow(),
        created_by=created_by,
    )
    session.add(release)
    session.add_all(
        ReleaseFile(
            release_id=release_id,
            file=f.file,
            role=f.role,
            variant=f.variant,
            sha256=f.sha256,
            length=f.length,
            target_path=target_path(body.component, body.version, f.file),
            tolerance=f.tolerance,
            memory_mb=f.memory_mb,
            quality=f.quality,
            arch=f.arch,
            accelerator=f.accelerator,
        )
        for f in body.files
    )
    session.flush()
    deltas.enqueue(session, release, delta_history)
    return release, True


def _check_files(body: ReleaseCreate, store: ArtifactStore) -> None:
    for f in body.files:
        stored = store.length(f.sha256)
        if stored is None:
            raise InvalidError(
                f"file {f.file!r}: artifact {f.sha256} was not uploaded; "
                f"PUT it to /api/v1/artifacts/{f.sha256} first"
            )
        if stored != f.length:
            raise InvalidError(
                f"file {f.file!r}: declared length {f.length} but the stored artifact has {stored}"
            )


def resolve(session: Session, ref: str) -> Release:
    """A release by ID (``rel-…``) or by ``component@version``."""
    if "@" in ref:
        component, _, version = ref.partition("@")
        release = session.scalar(
            select(Release).where(Release.component == component, Release.version == version)
        )
    else:
        release = session.get(Release, ref)
    if release is None:
        raise NotFoundError(f"no release {ref!r}; list releases with `edgeota release list`")
    return release


def list_all(session: Session, component: str | None = None) -> list[Release]:
    query = select(Release)
    if component is not None:
        query = query.where(Release.component == component)
    releases = list(session.scalars(query))
    releases.sort(key=lambda r: (r.component, parse_version(r.version)), reverse=True)
    return releases


def to_public(session: Session, release: Release) -> ReleasePublic:
    files = session.scalars(
        select(ReleaseFile).where(ReleaseFile.release_id == release.id).order_by(ReleaseFile.file)
    )
    return ReleasePublic(
        id=release.id,
        component=release.component,
        version=release.version,
        hardware=release.hardware,
        needs=release.needs,
        created_at=as_utc(release.created_at),
        created_by=release.created_by,
        files=[
            ReleaseFilePublic(
                file=f.file,
                role=f.role,
                variant=f.variant,
                sha256=f.sha256,
                length=f.length,
                target_path=f.target_path,
                tolerance=f.tolerance,
                memory_mb=f.memory_mb,
                quality=f.quality,
                arch=f.arch,
                accelerator=f.accelerator,
            )
            for f in files
        ],
        deltas=deltas.for_release(session, release.id),
        retired_at=None if release.retired_at is None else as_utc(release.retired_at),
    )
