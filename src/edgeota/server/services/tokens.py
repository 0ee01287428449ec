"""Admin tokens and one-time enrollment tokens."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeota.server import security
from edgeota.server.models import AdminToken, EnrollmentToken
from edgeota.timeutil import utcnow


def create_admin_token(session: Session, name: str, secret: str | None = None) -> str:
    token = security.ADMIN_PREFIX + (secret or security.new_secret())
    session.add(
        AdminToken(
            name=name, token_hash=security.hash_secret(token), created_at=utcnow(), revoked_at=None
        )
    )
    session.flush()
    return token


def has_admin_tokens(session: Session) -> bool:
    return session.scalar(select(AdminToken.id).limit(1)) is not None


def find_admin(session: Session, token: str) -> AdminToken | None:
    row = session.scalar(
        select(AdminToken).where(AdminToken.token_hash == security.hash_secret(token))
    )
    if row is None or row.revoked_at is not None:
        return None
    return row


def create_enrollment_token(
    session: Session, groups: list[str], expires_in_s: int
) -> tuple[str, EnrollmentToken]:
    token = security.ENROLL_PREFIX + security.new_secret()
    now = utcnow()
    row = EnrollmentToken(
        token_hash=security.hash_secret(token),
        groups=sorted(set(groups)),
        created_at=now,
        expires_at=now + timedelta(seconds=expires_in_s),
        used_at=None,
        used_by=None,
    )
    session.add(row)
    session.flush()
    return token, row
