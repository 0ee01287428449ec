"""An in-process TUF repository server for tests and the fleet simulator.

``RepositorySimulator`` runs a real ``TufRepository`` in a folder and serves it in memory
through ``httpx.MockTransport``, the same URL layout as the server (``/tuf/metadata/<name>``,
``/tuf/targets/<dir>/<sha256>.<name>``). An attack is staged by serving other bytes under a
name (``serve``), by forging metadata with keys the attacker holds (``forge_timestamp``,
``forge_targets``), or by moving the repository's clock (``now``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from tuf.ngclient.config import UpdaterConfig

from edgeota.errors import PolicyError
from edgeota.targets import TargetCustom, target_path
from edgeota.trust._tuf import Metadata, Signer, Targets
from edgeota.trust.client import TrustClient
from edgeota.trust.keys import OnlineRole, load_role_signers
from edgeota.trust.repository import TufRepository, init_repository, utc_now
from edgeota.trust.state import ExpiryPolicy, NewTarget, meta_file, serialize, sign

BASE_URL = "https://tuf.test"
METADATA_URL = f"{BASE_URL}/tuf/metadata"
TARGETS_URL = f"{BASE_URL}/tuf/targets"

Body = bytes | Callable[[], Iterator[bytes]]


class RepositorySimulator:
    """A repository on disk under ``base_dir``, served in memory; its clock is ``self.now``."""

    def __init__(
        self,
        base_dir: Path,
        expiry: ExpiryPolicy | None = None,
        now: datetime | None = None,
    ) -> None:
        self.now = now or utc_now()
        self.metadata_dir = base_dir / "metadata"
        self.online_key_dir = base_dir / "keys-online"
        self.root_key_dir = base_dir / "keys-root"
        expiry = expiry or ExpiryPolicy()
        init_repository(self.metadata_dir, self.online_key_dir, self.root_key_dir, expiry, self.now)
        self.repo = TufRepository.open(
            self.metadata_dir, self.online_key_dir, expiry, clock=lambda: self.now
        )
        # Target bytes by their consistent-snapshot name (<dir>/<sha256>.<name>).
        self.target_files: dict[str, bytes] = {}
        # Bytes served under a metadata name instead of the repository's file.
        self.overrides: dict[str, Body] = {}
        # Every request path, in order.
        self.requests: list[str] = []

    # Publishing ----------------------------------------------------------------------

    def publish(self, path: str, data: bytes, custom: Mapping[str, Any] | None = None) -> NewTarget:
        """Store ``data`` as a target file and list it in a new targets version."""
        sha256 = hashlib.sha256(data).hexdigest()
        target = NewTarget(path=path, length=len(data), sha256=sha256, custom=custom or {})
        dirname, sep, basename = path.rpartition("/")
        self.target_files[f"{dirname}{sep}{sha256}.{basename}"] = data
        self.repo.add_targets([target])
        return target

    def publish_release_file(
        self, component: str, version: str, file: str, data: bytes, role: str = "model"
    ) -> NewTarget:
        """Publish one file of a release with a valid edgeota custom field."""
        custom = TargetCustom(
            component=component,
            version=version,
            release_id=f"rel-{component}-{version}",
            role=role,
            file=file,
        )
        return self.publish(target_path(component, version, file), data, custom.to_custom())

    # Serving -------------------------------------------------------------------------

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(path)
        if path.startswith("/tuf/metadata/"):
            return self._metadata_response(path.removeprefix("/tuf/metadata/"))
        if path.startswith("/tuf/targets/"):
            data = self.target_files.get(path.removeprefix("/tuf/targets/"))
            if data is not None:
                return httpx.Response(200, content=data)
        return httpx.Response(404)

    def http_client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler))

    def trust_client(
        self,
        device_dir: Path,
        http: httpx.Client,
        config: UpdaterConfig | None = None,
        bootstrap_root: bytes | None = None,
    ) -> TrustClient:
        """A device's client that pinned ``1.root.json`` unless told otherwise."""
        root = bootstrap_root or self.metadata_bytes("1.root.json")
        return TrustClient(device_dir, METADATA_URL, TARGETS_URL, http, root, config=config)

    def _metadata_response(self, name: str) -> httpx.Response:
        override = self.overrides.get(name)
        if isinstance(override, bytes):
            return httpx.Response(200, content=override)
        if override is not None:
            return httpx.Response(200, content=override())
        try:
            path = self.repo.metadata_file(name)
        except PolicyError:
            return httpx.Response(404)
        if not path.is_file():
            return httpx.Response(404)
        return httpx.Response(200, content=path.read_bytes())

    # Staging attacks -----------------------------------------------------------------

    def metadata_bytes(self, name: str) -> bytes:
        return self.repo.metadata_file(name).read_bytes()

    def serve(self, name: str, body: Body) -> None:
        """Serve ``body`` under metadata ``name`` instead of the repository's file."""
        self.overrides[name] = body

    def signers(self, role: OnlineRole) -> list[Signer]:
        return list(self.repo.signers(role))

    def root_signers(self) -> list[Signer]:
        root = self.repo.load_state().root.signed
        return list(load_role_signers(self.root_key_dir, "root", root.roles["root"].keyids))

    def forge_timestamp(
        self,
        snapshot_version: int,
        version: int,
        signers: Sequence[Signer] | None = None,
    ) -> bytes:
        """Serve a timestamp ``version`` naming ``snapshot_version``, signed by ``signers``.

        By default it is signed with the current timestamp key: an attacker who holds it.
        """
        timestamp = self.repo.load_state().timestamp
        snapshot_data = self.metadata_bytes(f"{snapshot_version}.snapshot.json")
        timestamp.signed.version = version
        timestamp.signed.snapshot_meta = meta_file(snapshot_version, snapshot_data)
        sign(timestamp, signers or self.signers("timestamp"))
        data = serialize(timestamp)
        self.serve("timestamp.json", data)
        return data

    def served(self, name: str) -> Metadata[Any]:
        """The metadata clients currently get under ``name`` (an override or the file)."""
        override = self.overrides.get(name)
        data = override if isinstance(override, bytes) else self.metadata_bytes(name)
        served: Metadata[Any] = Metadata.from_bytes(data)
        return served

    def forge_targets(self, targets: Metadata[Targets], signers: Sequence[Signer]) -> None:
        """Serve ``targets`` signed by ``signers``, named by a new snapshot and timestamp.

        The new snapshot and timestamp follow what is served now and are signed with the
        current online keys, so only the targets signature decides whether a client
        accepts the chain.
        """
        timestamp = self.served("timestamp.json")
        snapshot = self.served(f"{timestamp.signed.snapshot_meta.version}.snapshot.json")
        sign(targets, signers)
        targets_data = serialize(targets)
        snapshot.signed.version += 1
        snapshot.signed.meta["targets.json"] = meta_file(targets.signed.version, targets_data)
        sign(snapshot, self.signers("snapshot"))
        snapshot_data = serialize(snapshot)
        timestamp.signed.version += 1
        timestamp.signed.snapshot_meta = meta_file(snapshot.signed.version, snapshot_data)
        sign(timestamp, self.signers("timestamp"))
        self.serve(f"{targets.signed.version}.targets.json", targets_data)
        self.serve(f"{snapshot.signed.version}.snapshot.json", snapshot_data)
        self.serve("timestamp.json", serialize(timestamp))
