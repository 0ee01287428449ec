"""What the next signed metadata of the repository is: pure functions, no file or network I/O.

Each operation takes the current ``RepositoryState`` and the signers, changes the state in
place, and returns the files to publish as ``(name, bytes)`` pairs in the order they must be
written: targets before the snapshot naming it, the snapshot before the timestamp naming it.
Writing ``timestamp.json`` last makes it the commit point of a publication: until it is
replaced, clients keep seeing the previous consistent set.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tuf.api.serialization.json import JSONSerializer

from edgeota.fsutil import safe_relative_path
from edgeota.trust._tuf import (
    Metadata,
    MetaFile,
    Root,
    Signer,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from edgeota.trust.keys import ONLINE_ROLES, ROLE_NAMES, KeyRing, OnlineRole, RoleName

MetadataFile = tuple[str, bytes]

_DAY_S = 86400
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ExpiryPolicy:
    """How long each role's metadata stays valid, and how early it is re-signed.

    Short timestamp expiry bounds how long a freeze attack can go unnoticed; the refresh
    margins leave the background loop time to re-sign before devices see expired metadata.
    The root is re-signed only by an operator with the offline root key, so its margin is
    only used to warn.
    """

    root_expiry_s: int = 365 * _DAY_S
    root_refresh_margin_s: int = 60 * _DAY_S
    targets_expiry_s: int = 90 * _DAY_S
    targets_refresh_margin_s: int = 30 * _DAY_S
    snapshot_expiry_s: int = 7 * _DAY_S
    snapshot_refresh_margin_s: int = 3 * _DAY_S
    timestamp_expiry_s: int = _DAY_S
    timestamp_refresh_margin_s: int = _DAY_S // 2

    def __post_init__(self) -> None:
        for role in ROLE_NAMES:
            expiry, margin = self.expiry_s(role), self.refresh_margin_s(role)
            if expiry <= 0 or not 0 <= margin < expiry:
                raise ValueError(
                    f"{role}: expiry must be positive and the refresh margin in [0, expiry), "
                    f"got expiry {expiry}s and margin {margin}s"
                )

    def expiry_s(self, role: RoleName) -> int:
        value: int = getattr(self, f"{role}_expiry_s")
        return value

    def refresh_margin_s(self, role: RoleName) -> int:
        value: int = getattr(self, f"{role}_refresh_margin_s")
        return value

    def expires(self, role: RoleName, now: datetime) -> datetime:
        return now + timedelta(seconds=self.expiry_s(role))


@dataclass(frozen=True)
class NewTarget:
    """A file to list in the targets metadata, with its ``custom`` field (see edgeota.targets)."""

    path: str
    length: int
    sha256: str
    custom: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        safe_relative_path(self.path)
        if self.length < 0:
            raise ValueError(f"target {self.path!r}: length must be >= 0, got {self.length}")
        if not _SHA256_RE.match(self.sha256):
            raise ValueError(f"target {self.path!r}: sha256 must be 64 lowercase hex digits")


@dataclass
class RepositoryState:
    """The current top-level metadata of a repository."""

    root: Metadata[Root]
    targets: Metadata[Targets]
    snapshot: Metadata[Snapshot]
    timestamp: Metadata[Timestamp]

    def version(self, role: RoleName) -> int:
        version: int = self.metadata(role).signed.version
        return version

    def expires(self, role: RoleName) -> datetime:
        expires: datetime = self.metadata(role).signed.expires
        return expires

    def metadata(self, role: RoleName) -> Metadata[Any]:
        by_role: dict[RoleName, Metadata[Any]] = {
            "root": self.root,
            "targets": self.targets,
            "snapshot": self.snapshot,
            "timestamp": self.timestamp,
        }
        return by_role[role]


def serialize(metadata: Metadata[Any]) -> bytes:
    # Indented JSON: operators read these files; the signature covers the canonical form.
    return metadata.to_bytes(JSONSerializer(compact=False))


def sign(metadata: Metadata[Any], signers: Sequence[Signer]) -> None:
    """Replace the signatures of ``metadata`` with one from each of ``signers``."""
    if not signers:
        raise ValueError(f"no signing key for {metadata.signed.type} metadata")
    metadata.signatures.clear()
    for signer in signers:
        metadata.sign(signer, append=True)


def meta_file(version: int, data: bytes) -> MetaFile:
    # Length and hash as well as the version: the client then downloads exactly that many
    # bytes and refuses any other file served under the expected name.
    return MetaFile(version=version, length=len(data), hashes={"sha256": _sha256(data)})


def create(
    keys: KeyRing, expiry: ExpiryPolicy, now: datetime
) -> tuple[RepositoryState, list[MetadataFile]]:
    """Version 1 of every role, consistent snapshots on, one signature threshold each."""
    root = Root(expires=expiry.expires("root", now), consistent_snapshot=True)
    for role in ROLE_NAMES:
        for signer in keys.get(role):
            root.add_key(signer.public_key, role)
    state = RepositoryState(
        root=Metadata(root),
        targets=Metadata(Targets(expires=now)),
        snapshot=Metadata(Snapshot(expires=now)),
        timestamp=Metadata(Timestamp(expires=now)),
    )
    sign(state.root, keys.get("root"))
    files = _root_files(state.root)
    files += _sign_chain(state, ONLINE_ROLES, keys, expiry, now)
    return state, files


def publish_targets(
    state: RepositoryState,
    targets: Iterable[NewTarget],
    keys: KeyRing,
    expiry: ExpiryPolicy,
    now: datetime,
) -> list[MetadataFile]:
    """Add or replace targets: a new targets version, and the snapshot and timestamp after it."""
    listed = state.targets.signed.targets
    for target in targets:
        listed[target.path] = TargetFile(
            length=target.length,
            hashes={"sha256": target.sha256},
            path=target.path,
            unrecognized_fields={"custom": dict(target.custom)},
        )
    return resign(state, ["targets"], keys, expiry, now)


def remove_targets(
    state: RepositoryState,
    paths: Iterable[str],
    keys: KeyRing,
    expiry: ExpiryPolicy,
    now: datetime,
) -> list[MetadataFile]:
    """Stop listing ``paths``: a new targets version (and snapshot, timestamp) without them.

    Paths not listed are ignored; when none was listed nothing is signed (no new version).
    """
    listed = state.targets.signed.targets
    gone = [p for p in paths if listed.pop(p, None) is not None]
    if not gone:
        return []
    return resign(state, ["targets"], keys, expiry, now)


def resign(
    state: RepositoryState,
    roles: Iterable[OnlineRole],
    keys: KeyRing,
    expiry: ExpiryPolicy,
    now: datetime,
) -> list[MetadataFile]:
    """Bump the version of ``roles`` and of every role that names them, and sign them again."""
    todo = set(roles)
    # A new targets version must be named by a new snapshot, and that by a new timestamp.
    if "targets" in todo:
        todo.add("snapshot")
    if "snapshot" in todo:
        todo.add("timestamp")
    ordered = [role for role in ONLINE_ROLES if role in todo]
    for role in ordered:
        state.metadata(role).signed.version += 1
    return _sign_chain(state, ordered, keys, expiry, now)


def roles_to_refresh(
    state: RepositoryState, expiry: ExpiryPolicy, now: datetime
) -> list[OnlineRole]:
    """Online roles that expire within their refresh margin or no longer verify against root.

    The second case heals a key rotation interrupted after the new root was written but
    before the role was signed with its new key.
    """
    due: list[OnlineRole] = []
    for role in ONLINE_ROLES:
        margin = timedelta(seconds=expiry.refresh_margin_s(role))
        if state.expires(role) - now <= margin or not verifies(state, role):
            due.append(role)
    return due


def root_expires_soon(state: RepositoryState, expiry: ExpiryPolicy, now: datetime) -> bool:
    return state.expires("root") - now <= timedelta(seconds=expiry.refresh_margin_s("root"))


def verifies(state: RepositoryState, role: OnlineRole) -> bool:
    """Whether the current signatures of ``role`` meet its threshold in the current root."""
    metadata = state.metadata(role)
    result = state.root.signed.get_verification_result(
        role, metadata.signed_bytes, metadata.signatures
    )
    verified: bool = result.verified
    return verified


def change_root(
    state: RepositoryState,
    change: Callable[[Root], None],
    signers: Sequence[Signer],
    expiry: ExpiryPolicy,
    now: datetime,
) -> list[MetadataFile]:
    """Publish the next root version after applying ``change`` to it, signed by ``signers``.

    A client accepts root N+1 only when it is signed by a threshold of the root keys of
    version N and by a threshold of its own root keys, so for a root key rotation
    ``signers`` must hold both the old and the new keys.
    """
    root = state.root.signed
    change(root)
    root.version += 1
    root.expires = expiry.expires("root", now)
    sign(state.root, signers)
    return _root_files(state.root)


def replace_role_keys(root: Root, role: RoleName, new_signers: Sequence[Signer]) -> list[str]:
    """Revoke every key of ``role`` in ``root`` and trust ``new_signers`` instead.

    Returns the revoked keyids.
    """
    revoked = list(root.roles[role].keyids)
    for keyid in revoked:
        root.revoke_key(keyid, role)
    for signer in new_signers:
        root.add_key(signer.public_key, role)
    return revoked


def _root_files(root: Metadata[Root]) -> list[MetadataFile]:
    data = serialize(root)
    # The versioned file is what clients walk through; root.json is the newest, for pinning.
    return [(f"{root.signed.version}.root.json", data), ("root.json", data)]


def _sign_chain(
    state: RepositoryState,
    roles: Sequence[OnlineRole],
    keys: KeyRing,
    expiry: ExpiryPolicy,
    now: datetime,
) -> list[MetadataFile]:
    files: list[MetadataFile] = []
    targets_data = snapshot_data = None
    for role in roles:
        metadata = state.metadata(role)
        if role == "snapshot" and targets_data is not None:
            state.snapshot.signed.meta["targets.json"] = meta_file(
                state.version("targets"), targets_data
            )
        if role == "timestamp" and snapshot_data is not None:
            state.timestamp.signed.snapshot_meta = meta_file(
                state.version("snapshot"), snapshot_data
            )
        metadata.signed.expires = expiry.expires(role, now)
        sign(metadata, keys.get(role))
        data = serialize(metadata)
        if role == "targets":
            targets_data = data
            files.append((f"{metadata.signed.version}.targets.json", data))
        elif role == "snapshot":
            snapshot_data = data
            files.append((f"{metadata.signed.version}.snapshot.json", data))
        else:
            files.append(("timestamp.json", data))
    return files


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
