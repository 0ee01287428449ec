"""Signing keys of the TUF repository: ed25519, stored as PKCS#8 PEM files.

Each key lives in ``<key_dir>/<role>.<keyid>.pem`` (mode 0600). The root key directory is
separate from the online key directory so the root key can be kept offline: everyday
publishing needs only the targets, snapshot and timestamp keys.

A key file alone does not make a key trusted: ``load_role_signers`` keeps only the keys the
current root metadata names for the role, so a key left behind by an interrupted rotation
is never used.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final, Literal, get_args

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from edgeota.fsutil import atomic_write_bytes, fsync_dir
from edgeota.trust._tuf import CryptoSigner

RoleName = Literal["root", "targets", "snapshot", "timestamp"]
OnlineRole = Literal["targets", "snapshot", "timestamp"]

ROLE_NAMES: Final[tuple[RoleName, ...]] = get_args(RoleName)
ONLINE_ROLES: Final[tuple[OnlineRole, ...]] = get_args(OnlineRole)

_KEY_FILE_RE = re.compile(r"^(root|targets|snapshot|timestamp)\.([0-9a-f]{64})\.pem$")


def key_file(key_dir: Path, role: RoleName, keyid: str) -> Path:
    return key_dir / f"{role}.{keyid}.pem"


def generate_key(key_dir: Path, role: RoleName) -> CryptoSigner:
    """Create a new ed25519 key for ``role``, store it in ``key_dir`` and return its signer."""
    signer = CryptoSigner.generate_ed25519()
    _make_private_dir(key_dir)
    atomic_write_bytes(
        key_file(key_dir, role, signer.public_key.keyid), signer.private_bytes, 0o600
    )
    return signer


def load_key(path: Path) -> CryptoSigner:
    """Load one PEM key file written by ``generate_key``."""
    private_key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private_key, Ed25519PrivateKey):
        raise TypeError(f"{path} does not hold an ed25519 private key")
    # The public key (and so the keyid) is derived from the private key, exactly as
    # CryptoSigner.generate_ed25519 derived it when the key was created.
    return CryptoSigner(private_key)


def load_role_signers(
    key_dir: Path, role: RoleName, trusted_keyids: Iterable[str]
) -> list[CryptoSigner]:
    """Signers for ``role`` found in ``key_dir`` whose keyid is in ``trusted_keyids``."""
    wanted = set(trusted_keyids)
    signers = []
    for keyid in sorted(wanted):
        path = key_file(key_dir, role, keyid)
        if path.is_file():
            signer = load_key(path)
            if signer.public_key.keyid != keyid:
                raise ValueError(f"{path} holds key {signer.public_key.keyid}, not {keyid}")
            signers.append(signer)
    return signers


def stored_keyids(key_dir: Path, role: RoleName) -> set[str]:
    """Keyids of the key files stored for ``role`` in ``key_dir``."""
    if not key_dir.is_dir():
        return set()
    found = set()
    for entry in key_dir.iterdir():
        match = _KEY_FILE_RE.match(entry.name)
        if match and match.group(1) == role:
            found.add(match.group(2))
    return found


def remove_keys(key_dir: Path, role: RoleName, keyids: Iterable[str]) -> None:
    """Delete revoked keys so they cannot be used by mistake later."""
    for keyid in keyids:
        with contextlib.suppress(FileNotFoundError):
            key_file(key_dir, role, keyid).unlink()
    if key_dir.is_dir():
        fsync_dir(key_dir)


def _make_private_dir(key_dir: Path) -> None:
    key_dir.mkdir(parents=True, exist_ok=True)
    # Private keys: no one but the owner may even list the folder.
    key_dir.chmod(0o700)


class KeyRing:
    """The signers available for each role (several per role when a threshold needs them)."""

    def __init__(self, signers: Mapping[RoleName, Iterable[CryptoSigner]] | None = None) -> None:
        self._signers: dict[RoleName, list[CryptoSigner]] = {role: [] for role in ROLE_NAMES}
        for role, role_signers in (signers or {}).items():
            self._signers[role].extend(role_signers)

    def get(self, role: RoleName) -> list[CryptoSigner]:
        return list(self._signers[role])

    def add(self, role: RoleName, signer: CryptoSigner) -> None:
        self._signers[role].append(signer)

    def replace(self, role: RoleName, signers: Iterable[CryptoSigner]) -> None:
        self._signers[role] = list(signers)

    def keyids(self, role: RoleName) -> list[str]:
        return [s.public_key.keyid for s in self._signers[role]]
