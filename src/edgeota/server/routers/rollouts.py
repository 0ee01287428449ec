"""Staged rollouts (operators only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from edgeota.rollout import Command, RolloutStatus
from edgeota.server.deps import AdminDep, ContextDep, SessionDep
from edgeota.server.schemas import RolloutCreate, RolloutPublic
from edgeota.server.services import audit, rollouts

router = APIRouter(prefix="/api/v1", tags=["rollouts"])


@router.post("/rollouts", response_model=RolloutPublic, status_code=status.HTTP_201_CREATED)
def create_rollout(
    body: RolloutCreate, admin: AdminDep, session: SessionDep, ctx: ContextDep
) -> RolloutPublic:
    """Create a rollout; the rollout loop starts it at ``start_at`` (default: at once)."""
    rollout = rollouts.create(session, body, admin.name, ctx.clock())
    details = body.model_dump(mode="json", exclude_none=True)
    audit.record(session, admin.name, "rollout.create", "rollout", rollout.id, details)
    return rollouts.to_public(session, rollout)


@router.get("/rollouts", response_model=list[RolloutPublic])
def list_rollouts(
    _: AdminDep,
    session: SessionDep,
    status: Annotated[RolloutStatus | None, Query()] = None,
    component: Annotated[str | None, Query(max_length=64)] = None,
) -> list[RolloutPublic]:
    found = rollouts.list_all(session, None if status is None else status.value, component)
    return [rollouts.to_public(session, r) for r in found]


@router.get("/rollouts/{rollout_id}", response_model=RolloutPublic)
def get_rollout(rollout_id: int, _: AdminDep, session: SessionDep) -> RolloutPublic:
    return rollouts.to_public(session, rollouts.get(session, rollout_id))


@router.post("/rollouts/{rollout_id}/{command}", response_model=RolloutPublic)
def command_rollout(
    rollout_id: int, command: Command, admin: AdminDep, session: SessionDep, ctx: ContextDep
) -> RolloutPublic:
    """pause, resume, abort, or rollback (re-publish the previous release, higher, to the
    devices this rollout told). A command the rollout's status does not allow is a 409."""
    rollout = rollouts.command(
        session,
        rollout_id,
        command,
        ctx.clock(),
        store=ctx.artifacts,
        signer=ctx.signer,
        by=admin.name,
    )
    audit.record(session, admin.name, f"rollout.{command.value}", "rollout", rollout_id)
    return rollouts.to_public(session, rollout)
