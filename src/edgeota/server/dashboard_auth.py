"""Dashboard sessions: an admin token is exchanged for a signed, HttpOnly session cookie.

The cookie holds the admin token's row id, an expiry and a CSRF token, signed with
HMAC-SHA256; it never holds the admin token. Every request checks the signature, the expiry
and that the admin token is still valid, so revoking a token ends its sessions.

Cross-site request forgery: the cookie is ``SameSite=Strict``, and every form that changes
something posts the session's CSRF token, compared in constant time. The login form, which
has no session yet, carries a token that is also set as a short-lived cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from sqlalchemy.orm import Session

from edgeota.server.models import AdminToken
from edgeota.server.services import tokens

SESSION_COOKIE = "edgeota_session"
LOGIN_COOKIE = "edgeota_login"
LOGIN_MAX_AGE_S = 600


@dataclass(frozen=True)
class DashboardSession:
    token_id: int
    name: str
    csrf: str
    expires_unix_s: int

    @property
    def actor(self) -> str:
        return f"admin:{self.name}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, payload: dict[str, object]) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def unsign(key: bytes, value: str) -> dict[str, object] | None:
    body, sep, mac = value.partition(".")
    if not sep:
        return None
    want = hmac.new(key, body.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(want, _unb64(mac)):
            return None
        payload = json.loads(_unb64(body))
    except (ValueError, TypeError):
        return None
    return payload if isinstance(payload, dict) else None


def new_session_cookie(key: bytes, admin: AdminToken, max_age_s: int) -> str:
    payload = {
        "tid": admin.id,
        "exp": int(time.time()) + max_age_s,
        "csrf": secrets.token_urlsafe(24),
    }
    return sign(key, payload)


def read_session(session: Session, key: bytes, cookie: str | None) -> DashboardSession | None:
    """The session a cookie stands for, if it is signed, unexpired and its token valid."""
    payload = unsign(key, cookie) if cookie else None
    if payload is None:
        return None
    tid, exp, csrf = payload.get("tid"), payload.get("exp"), payload.get("csrf")
    if not isinstance(tid, int) or not isinstance(exp, int) or not isinstance(csrf, str):
        return None
    if exp <= time.time():
        return None
    admin = session.get(AdminToken, tid)
    if admin is None or admin.revoked_at is not None:
        return None
    return DashboardSession(tid, admin.name, csrf, exp)


def login(session: Session, token: str) -> AdminToken | None:
    return tokens.find_admin(session, token.strip())


def new_login_token(key: bytes) -> tuple[str, str]:
    """(form token, cookie value) for the login form."""
    token = secrets.token_urlsafe(24)
    return token, sign(key, {"login": token, "exp": int(time.time()) + LOGIN_MAX_AGE_S})


def login_token_ok(key: bytes, cookie: str | None, form_token: str) -> bool:
    payload = unsign(key, cookie) if cookie else None
    if payload is None:
        return False
    token, exp = payload.get("login"), payload.get("exp")
    if not isinstance(token, str) or not isinstance(exp, int) or exp <= time.time():
        return False
    return hmac.compare_digest(token, form_token)


def csrf_ok(current: DashboardSession, form_token: str) -> bool:
    return hmac.compare_digest(current.csrf, form_token)
