"""Artifacts, releases and deployments (operators only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from edgeota.server.admission import without_database
from edgeota.server.deps import AdminDep, ContextDep, SessionDep
from edgeota.server.schemas import (
    ArtifactPublic,
    DeploymentCreate,
    DeploymentPublic,
    KeptRelease,
    PrunePublic,
    PruneRequest,
    ReleaseBrief,
    ReleaseCreate,
    ReleasePublic,
)
from edgeota.server.services import audit, deployments, releases, retire
from edgeota.server.services.errors import NotFoundError

router = APIRouter(prefix="/api/v1", tags=["releases"])

Sha256Path = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]


@router.put("/artifacts/{sha256}", response_model=ArtifactPublic)
async def upload_artifact(
    sha256: Sha256Path, request: Request, _: AdminDep, session: SessionDep, ctx: ContextDep
) -> ArtifactPublic:
    """Upload a file by its sha256; uploading one that is already stored is a no-op."""
    existing = ctx.artifacts.length(sha256)
    if existing is not None:
        return ArtifactPublic(sha256=sha256, length=existing)
    async with without_database(session):  # a model upload may take minutes
        length = await ctx.artifacts.put_stream(
            request.stream(), sha256, ctx.settings.max_artifact_bytes
        )
    return ArtifactPublic(sha256=sha256, length=length)


@router.get("/artifacts/{sha256}", response_model=ArtifactPublic)
def stat_artifact(sha256: Sha256Path, _: AdminDep, ctx: ContextDep) -> ArtifactPublic:
    """Whether a file is stored (200 with its length) or not (404): a client uploads only
    what is missing, such as the one changed layer of a container image."""
    length = ctx.artifacts.length(sha256)
    if length is None:
        raise NotFoundError(f"no artifact {sha256} is stored; upload it with PUT")
    return ArtifactPublic(sha256=sha256, length=length)


@router.post("/releases", response_model=ReleasePublic, status_code=status.HTTP_201_CREATED)
def create_release(
    body: ReleaseCreate, admin: AdminDep, session: SessionDep, ctx: ContextDep, response: Response
) -> ReleasePublic:
    release, created = releases.publish(
        session,
        body,
        ctx.artifacts,
        ctx.signer,
        admin.name,
        delta_history=ctx.settings.delta_history,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    else:
        details = {"component": release.component, "version": release.version}
        audit.record(session, admin.name, "release.publish", "release", release.id, details)
    return releases.to_public(session, release)


@router.get("/releases", response_model=list[ReleasePublic])
def list_releases(
    _: AdminDep,
    session: SessionDep,
    component: Annotated[str | None, Query(max_length=64)] = None,
) -> list[ReleasePublic]:
    return [releases.to_public(session, r) for r in releases.list_all(session, component)]


@router.get("/releases/{release_ref}", response_model=ReleasePublic)
def get_release(release_ref: str, _: AdminDep, session: SessionDep) -> ReleasePublic:
    return releases.to_public(session, releases.resolve(session, release_ref))


@router.post("/releases/{release_ref}/retire", response_model=ReleasePublic)
def retire_release(
    release_ref: str, admin: AdminDep, session: SessionDep, ctx: ContextDep
) -> ReleasePublic:
    """Take a release nobody desires out of the signed metadata and delete its unshared
    files (409 while a device desires it or a rollout of it runs)."""
    release = releases.resolve(session, release_ref)
    freed = retire.retire(session, release, ctx.signer, ctx.artifacts)
    audit.record(
        session, admin.name, "release.retire", "release", release.id, {"files_deleted": freed}
    )
    return releases.to_public(session, release)


@router.post("/releases/prune", response_model=PrunePublic)
def prune_releases(
    body: PruneRequest, admin: AdminDep, session: SessionDep, ctx: ContextDep
) -> PrunePublic:
    """Retire every release older than the newest ``keep`` of its component that no device
    desires, no rollout ships and no fleet rollback would go back to (one new signed targets
    version); the others are listed as kept, with the reason."""
    result = retire.prune(
        session, body.keep, ctx.signer, ctx.artifacts, body.component, body.dry_run
    )
    if not body.dry_run:
        retire.record_pruned(session, admin.name, result)
    return _prune_public(result, body.dry_run)


def _prune_public(result: retire.PruneResult, dry_run: bool) -> PrunePublic:
    return PrunePublic(
        dry_run=dry_run,
        retired=[
            ReleaseBrief(id=r.id, component=r.component, version=r.version) for r in result.retired
        ],
        kept=[
            KeptRelease(id=r.id, component=r.component, version=r.version, reason=why)
            for r, why in result.kept
        ],
        files_deleted=result.files_deleted,
    )


@router.post("/deployments", response_model=DeploymentPublic, status_code=status.HTTP_201_CREATED)
def create_deployment(
    body: DeploymentCreate, admin: AdminDep, session: SessionDep
) -> DeploymentPublic:
    release = releases.resolve(session, body.release)
    deployment = deployments.create(session, release, body.group, admin.name)
    details = {"release_id": release.id, "group": body.group, "devices": deployment.devices}
    audit.record(session, admin.name, "deployment.create", "deployment", deployment.id, details)
    return deployment


@router.get("/deployments", response_model=list[DeploymentPublic])
def list_deployments(_: AdminDep, session: SessionDep) -> list[DeploymentPublic]:
    return deployments.list_all(session)
