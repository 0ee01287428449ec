"""Fleet rollback: the previous release's content, re-published as a new, higher release.

Installed versions never go down on a device, so going back means going forward: the files,
hardware and needs of the release before the rolled-out one are published (and signed as
TUF targets) under the next patch version above every published version of the component.
Devices then move to it like to any release; the artifacts are already stored.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeota.server.artifacts import ArtifactStore
from edgeota.server.models import Release, ReleaseFile
from edgeota.server.schemas import ReleaseCreate, ReleaseFileCreate
from edgeota.server.services import releases
from edgeota.server.services.errors import ConflictError
from edgeota.targets import parse_version


def previous_release(session: Session, release: Release) -> Release:
    """The highest release of the component below ``release`` that is not retired (its files
    are still stored); ConflictError if none."""
    below = [
        r
        for r in releases.list_all(session, release.component)
        if parse_version(r.version) < parse_version(release.version) and r.retired_at is None
    ]
    if not below:
        raise ConflictError(
            f"{release.component} {release.version} has no earlier release that is not "
            "retired: there is nothing to roll back to; abort the rollout instead"
        )
    return below[0]  # list_all sorts newest version first


def next_version(session: Session, component: str) -> str:
    """The next patch version above every published version of ``component``."""
    newest = releases.list_all(session, component)[0]
    return str(parse_version(newest.version).bump_patch())


def republish(
    session: Session,
    release: Release,
    store: ArtifactStore,
    signer: releases.TargetSigner,
    created_by: str,
) -> tuple[Release, Release]:
    """Publish the content before ``release`` as a new release; return it and its source."""
    source = previous_release(session, release)
    files = session.scalars(select(ReleaseFile).where(ReleaseFile.release_id == source.id))
    body = ReleaseCreate(
        component=source.component,
        version=next_version(session, source.component),
        files=[
            ReleaseFileCreate.model_validate(
                {
                    "file": f.file,
                    "role": f.role,
                    "sha256": f.sha256,
                    "length": f.length,
                    "variant": f.variant,
                    "tolerance": f.tolerance,
                }
            )
            for f in files
        ],
        hardware=list(source.hardware),
        needs=dict(source.needs),
    )
    new, _ = releases.publish(session, body, store, signer, created_by)
    return new, source
