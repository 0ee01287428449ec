"""The server side of TUF: a repository of signed metadata in one folder, with consistent snapshots.

Layout of ``metadata_dir`` (every file is served as is, by name)::

    1.root.json 2.root.json ...  every root version: clients walk them one by one
    root.json                    the newest root, for pinning on devices
    N.targets.json               the last KEPT_VERSIONS targets versions (consistent snapshots)
    N.snapshot.json              the last KEPT_VERSIONS snapshot versions
    timestamp.json               the newest timestamp: the commit point of a publication
    .lock                        serialises writers across processes

Older snapshot and targets versions are deleted once KEPT_VERSIONS newer ones exist: a
client reads timestamp, then snapshot, then targets within one refresh, so only a client
that lost that race against KEPT_VERSIONS publications gets a 404, and retries. Without
pruning, every publication would leave two files behind for good.

The current state is found from ``timestamp.json`` down (timestamp -> snapshot -> targets),
so a publication interrupted before its timestamp was written is simply not visible.
Every change runs under an exclusive file lock and re-reads the state from disk first, so two
processes publishing at once cannot interleave or lose each other's targets.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuf.api.serialization import DeserializationError

from edgeota.errors import FormatError, PolicyError
from edgeota.fsutil import atomic_write_bytes, exclusive_lock
from edgeota.trust import state as st
from edgeota.trust._tuf import (
    CryptoSigner,
    Metadata,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from edgeota.trust.keys import (
    ONLINE_ROLES,
    KeyRing,
    OnlineRole,
    RoleName,
    generate_key,
    load_role_signers,
    remove_keys,
)
from edgeota.trust.state import ExpiryPolicy, MetadataFile, NewTarget, RepositoryState

Clock = Callable[[], datetime]
LOCK_NAME = ".lock"
KEPT_VERSIONS = 16  # of N.snapshot.json and N.targets.json, the current one included

_VERSIONED_RE = re.compile(r"^([1-9][0-9]{0,18})\.(snapshot|targets)\.json$")
_METADATA_NAME_RE = re.compile(
    r"^(?:[1-9][0-9]{0,18}\.(?:root|snapshot|targets)|root|timestamp)\.json$"
)


def utc_now() -> datetime:
    return datetime.now(UTC)


def check_metadata_name(name: str) -> str:
    """Return ``name`` if it is a metadata file name a client may ask for, else PolicyError.

    Only ``N.root.json``, ``N.snapshot.json``, ``N.targets.json``, ``root.json`` and
    ``timestamp.json`` match, so no name can reach outside the folder or the lock file.
    """
    if not _METADATA_NAME_RE.match(name):
        raise PolicyError(
            f"{name!r} is not a TUF metadata file name; expected N.root.json, N.snapshot.json, "
            "N.targets.json, root.json or timestamp.json"
        )
    return name


def init_repository(
    metadata_dir: Path,
    online_key_dir: Path,
    root_key_dir: Path,
    expiry: ExpiryPolicy,
    now: datetime,
) -> None:
    """Create keys (one root key, one online key per role) and version 1 of all metadata.

    Refuses to touch a folder that already holds a repository: new keys would orphan every
    device that pinned the existing root.
    """
    _check_aware(now)
    if online_key_dir.resolve() == root_key_dir.resolve():
        raise ValueError("keep the root key apart from the online keys: use two different folders")
    with exclusive_lock(metadata_dir / LOCK_NAME):
        existing = sorted(p.name for p in metadata_dir.glob("*.json"))
        if existing:
            raise FileExistsError(
                f"{metadata_dir} already holds TUF metadata ({', '.join(existing[:3])}...); "
                "open it with TufRepository.open, or pick an empty folder. Starting over "
                "would invalidate the root pinned on every device."
            )
        keys = KeyRing()
        keys.add("root", generate_key(root_key_dir, "root"))
        for role in ONLINE_ROLES:
            keys.add(role, generate_key(online_key_dir, role))
        _, files = st.create(keys, expiry, now)
        _write(metadata_dir, files)


class TufRepository:
    """Publishes targets and keeps the online metadata fresh; the root key stays offline."""

    def __init__(
        self, metadata_dir: Path, online_key_dir: Path, expiry: ExpiryPolicy, clock: Clock
    ) -> None:
        self._dir = metadata_dir
        self._online_key_dir = online_key_dir
        self._expiry = expiry
        self._clock = clock

    @classmethod
    def open(
        cls,
        metadata_dir: Path,
        online_key_dir: Path,
        expiry: ExpiryPolicy | None = None,
        clock: Clock = utc_now,
    ) -> TufRepository:
        """Open an existing repository; fails early if metadata or online keys are missing."""
        repo = cls(metadata_dir, online_key_dir, expiry or ExpiryPolicy(), clock)
        state = repo.load_state()
        repo._online_keys(state)
        return repo

    @property
    def metadata_dir(self) -> Path:
        return self._dir

    # Reading -------------------------------------------------------------------------

    def load_state(self) -> RepositoryState:
        """The current metadata, read from disk (timestamp -> snapshot -> targets)."""
        root: Metadata[Root] = self._read(Root, "root.json")
        timestamp: Metadata[Timestamp] = self._read(Timestamp, "timestamp.json")
        snapshot_name = f"{timestamp.signed.snapshot_meta.version}.snapshot.json"
        snapshot: Metadata[Snapshot] = self._read(Snapshot, snapshot_name)
        targets_meta = snapshot.signed.meta.get("targets.json")
        if targets_meta is None:
            raise FormatError(
                f"snapshot v{snapshot.signed.version} in {self._dir} names no targets"
            )
        targets: Metadata[Targets] = self._read(Targets, f"{targets_meta.version}.targets.json")
        return RepositoryState(root=root, targets=targets, snapshot=snapshot, timestamp=timestamp)

    def version(self, role: RoleName) -> int:
        return self.load_state().version(role)

    def targets(self) -> dict[str, TargetFile]:
        """The targets listed in the current targets metadata, by path."""
        return dict(self.load_state().targets.signed.targets)

    def metadata_file(self, name: str) -> Path:
        """The file to serve for a metadata request (it may not exist: answer 404 then)."""
        return self._dir / check_metadata_name(name)

    def signers(self, role: OnlineRole) -> list[CryptoSigner]:
        """The online signers the current root trusts for ``role``."""
        return self._online_keys(self.load_state()).get(role)

    def root_expires_soon(self, now: datetime | None = None) -> bool:
        """True when an operator should renew the root with the offline root key."""
        return st.root_expires_soon(self.load_state(), self._expiry, self._now(now))

    # Publishing ----------------------------------------------------------------------

    def add_targets(self, targets: Sequence[NewTarget]) -> int:
        """Add or replace ``targets``; returns the new targets version."""
        with self._locked() as state:
            files = st.publish_targets(
                state, targets, self._online_keys(state), self._expiry, self._now(None)
            )
            self._write(files)
            return state.version("targets")

    def remove_targets(self, paths: Sequence[str]) -> int:
        """Stop listing ``paths`` (a retired release); returns the targets version after."""
        with self._locked() as state:
            files = st.remove_targets(
                state, paths, self._online_keys(state), self._expiry, self._now(None)
            )
            if files:
                self._write(files)
            return state.version("targets")

    def refresh_expiring(self, now: datetime | None = None) -> list[str]:
        """Re-sign online roles that expire within their margin (or fail to verify).

        Returns the roles re-signed, in publication order (a new targets version also needs
        a new snapshot and timestamp). Meant to be called from a periodic background loop.
        """
        now = self._now(now)
        with self._locked() as state:
            due = st.roles_to_refresh(state, self._expiry, now)
            if not due:
                return []
            files = st.resign(state, due, self._online_keys(state), self._expiry, now)
            self._write(files)
            return [name.split(".")[-2] for name, _ in files]

    # Key management (needs the offline root key) ---------------------------------------

    def rotate_online_key(self, role: OnlineRole, root_key_dir: Path) -> None:
        """Replace the key of ``role`` with a new one and revoke the old one in a new root.

        Also the way to recover from a lost or compromised online key: the old key is not
        needed, only the root key.
        """
        if role not in ONLINE_ROLES:
            raise ValueError(f"{role!r} is not an online role; use rotate_root_key for root")
        now = self._now(None)
        with self._locked() as state:
            root_signers = self._root_keys(state, root_key_dir)
            keys = self._online_keys(state, skip=role)
            new_signer = generate_key(self._online_key_dir, role)
            revoked: list[str] = []

            def swap_key(root: Root) -> None:
                revoked.extend(st.replace_role_keys(root, role, [new_signer]))

            files = st.change_root(state, swap_key, root_signers, self._expiry, now)
            keys.replace(role, [new_signer])
            files += st.resign(state, [role], keys, self._expiry, now)
            self._write(files)
        remove_keys(self._online_key_dir, role, revoked)

    def rotate_root_key(self, root_key_dir: Path) -> None:
        """Replace the root key: the new root is signed by the old and the new key."""
        now = self._now(None)
        with self._locked() as state:
            old_signers = self._root_keys(state, root_key_dir)
            new_signer = generate_key(root_key_dir, "root")
            revoked: list[str] = []

            def swap_key(root: Root) -> None:
                revoked.extend(st.replace_role_keys(root, "root", [new_signer]))

            files = st.change_root(state, swap_key, [*old_signers, new_signer], self._expiry, now)
            self._write(files)
        remove_keys(root_key_dir, "root", revoked)

    def renew_root(self, root_key_dir: Path) -> None:
        """Publish the next root version with a fresh expiry and the same keys."""
        now = self._now(None)
        with self._locked() as state:
            signers = self._root_keys(state, root_key_dir)
            self._write(st.change_root(state, lambda _root: None, signers, self._expiry, now))

    # Internals -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[RepositoryState]:
        with exclusive_lock(self._dir / LOCK_NAME):
            # Another process may have published since we last looked.
            yield self.load_state()

    def _now(self, now: datetime | None) -> datetime:
        now = self._clock() if now is None else now
        _check_aware(now)
        return now

    def _online_keys(self, state: RepositoryState, skip: RoleName | None = None) -> KeyRing:
        keys = KeyRing()
        for role in ONLINE_ROLES:
            if role != skip:
                keys.replace(role, self._trusted_signers(state, role, self._online_key_dir))
        return keys

    def _root_keys(self, state: RepositoryState, root_key_dir: Path) -> list[CryptoSigner]:
        return self._trusted_signers(state, "root", root_key_dir)

    @staticmethod
    def _trusted_signers(
        state: RepositoryState, role: RoleName, key_dir: Path
    ) -> list[CryptoSigner]:
        spec = state.root.signed.roles[role]
        signers = load_role_signers(key_dir, role, spec.keyids)
        if len(signers) < spec.threshold:
            raise FileNotFoundError(
                f"found {len(signers)} of the {spec.threshold} {role} key(s) that root "
                f"v{state.version('root')} requires in {key_dir}; restore the key files, or "
                f"rotate the {role} key with the root key"
            )
        return signers

    def _read(self, kind: type[Any], name: str) -> Metadata[Any]:
        path = self._dir / name
        try:
            data = path.read_bytes()
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{path} is missing: {self._dir} is not a complete TUF repository "
                "(create one with init_repository)"
            ) from e
        try:
            metadata: Metadata[Any] = Metadata.from_bytes(data)
        except DeserializationError as e:
            raise FormatError(f"{path} is not valid TUF metadata: {e}") from e
        if not isinstance(metadata.signed, kind):
            raise FormatError(f"{path} holds {metadata.signed.type} metadata, not {kind.type}")
        return metadata

    def _write(self, files: list[MetadataFile]) -> None:
        _write(self._dir, files)
        prune_versions(self._dir)


def prune_versions(metadata_dir: Path, keep: int = KEPT_VERSIONS) -> list[str]:
    """Delete snapshot and targets versions older than the newest ``keep``; their names.

    Runs under the writer's lock, after the new timestamp is durable. Root versions are
    never deleted: a device that pinned an old root walks every one of them.
    """
    found: dict[str, list[int]] = {"snapshot": [], "targets": []}
    for path in metadata_dir.iterdir():
        m = _VERSIONED_RE.match(path.name)
        if m:
            found[m.group(2)].append(int(m.group(1)))
    removed = []
    for role, versions in found.items():
        for version in sorted(versions)[:-keep]:
            name = f"{version}.{role}.json"
            with contextlib.suppress(FileNotFoundError):
                (metadata_dir / name).unlink()
                removed.append(name)
    return removed


def _write(metadata_dir: Path, files: list[MetadataFile]) -> None:
    # In the given order: each file is durable before the file that names it is replaced.
    for name, data in files:
        atomic_write_bytes(metadata_dir / name, data)


def _check_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("pass a timezone-aware datetime (UTC) as the current time")
