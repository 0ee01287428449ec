"""Secrets: tokens are random, shown once, and stored only as SHA-256 hashes.

Tokens carry 256 bits of randomness, so a plain SHA-256 (no slow KDF) is the right hash: there
is nothing to brute-force, and the check-in hot path stays cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

ADMIN_PREFIX = "eoa_"
ENROLL_PREFIX = "eoe_"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def new_device_id() -> str:
    return f"dev-{secrets.token_hex(8)}"


def device_credential(device_id: str, secret: str) -> str:
    """A device credential names its device, so the check-in needs one primary-key lookup."""
    return f"{device_id}.{secret}"


def split_device_credential(credential: str) -> tuple[str, str] | None:
    device_id, sep, secret = credential.partition(".")
    if not sep or not device_id.startswith("dev-") or not secret:
        return None
    return device_id, secret
