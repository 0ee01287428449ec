"""Admin and enrollment tokens (operators only)."""

from __future__ import annotations

from fastapi import APIRouter, status

from edgeota.server.deps import AdminDep, SessionDep
from edgeota.server.schemas import AdminTokenCreate, EnrollmentTokenCreate, TokenPublic
from edgeota.server.services import audit, groups, tokens
from edgeota.timeutil import as_utc

router = APIRouter(prefix="/api/v1", tags=["tokens"])


@router.post("/admin-tokens", response_model=TokenPublic, status_code=status.HTTP_201_CREATED)
def create_admin_token(body: AdminTokenCreate, admin: AdminDep, session: SessionDep) -> TokenPublic:
    token = tokens.create_admin_token(session, body.name)
    audit.record(session, admin.name, "admin_token.create", "admin_token", body.name)
    return TokenPublic(token=token)


@router.post("/enrollment-tokens", response_model=TokenPublic, status_code=status.HTTP_201_CREATED)
def create_enrollment_token(
    body: EnrollmentTokenCreate, admin: AdminDep, session: SessionDep
) -> TokenPublic:
    groups.check_static_names(session, body.groups)
    token, row = tokens.create_enrollment_token(session, body.groups, body.expires_in_s)
    details = {"groups": row.groups, "expires_in_s": body.expires_in_s}
    kind = "enrollment_token"
    audit.record(session, admin.name, f"{kind}.create", kind, row.id, details)
    return TokenPublic(token=token, expires_at=as_utc(row.expires_at))
