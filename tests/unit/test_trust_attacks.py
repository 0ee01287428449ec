"""The metadata attacks of RELIABILITY.md (rows 1-7 and 9), each staged against a real
repository served in memory, and each refused by the device's TrustClient."""

from __future__ import annotations

import datetime as dt
import hashlib
import types
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tuf.ngclient._internal.trusted_metadata_set as trusted_metadata_set
from tuf.api import exceptions as tuf_errors
from tuf.ngclient.config import UpdaterConfig

from edgeota.errors import VerificationError
from edgeota.trust import verify_file
from edgeota.trust._tuf import CryptoSigner
from edgeota.trust.state import replace_role_keys, serialize, sign
from edgeota.trust.testing import RepositorySimulator

MODEL = "denoiser/1.0.0/model.onnx"


@pytest.fixture
def sim(tmp_path: Path) -> RepositorySimulator:
    return RepositorySimulator(tmp_path / "server")


@pytest.fixture
def http(sim: RepositorySimulator) -> Iterator[httpx.Client]:
    with sim.http_client() as client:
        yield client


def refused(excinfo: pytest.ExceptionInfo[VerificationError], cause: type[Exception]) -> str:
    assert isinstance(excinfo.value.__cause__, cause), repr(excinfo.value.__cause__)
    assert "refused" in str(excinfo.value)
    return str(excinfo.value)


def test_tampered_target_refused(
    sim: RepositorySimulator, http: httpx.Client, tmp_path: Path
) -> None:
    data = bytes(range(256)) * 64
    sim.publish_release_file("denoiser", "1.0.0", "model.onnx", data)
    target = sim.trust_client(tmp_path / "device", http).get_target(MODEL)
    downloaded = tmp_path / "model.onnx"
    downloaded.write_bytes(http.get(target.url).content)
    verify_file(downloaded, target)  # the untouched file passes

    tampered = bytearray(data)
    tampered[1000] ^= 0x01
    downloaded.write_bytes(bytes(tampered))
    with pytest.raises(VerificationError, match="sha256 mismatch") as excinfo:
        verify_file(downloaded, target)
    assert target.sha256 in str(excinfo.value)
    assert hashlib.sha256(tampered).hexdigest() in str(excinfo.value)

    downloaded.write_bytes(data + b"\x00")
    with pytest.raises(VerificationError, match=f"expected {len(data)} bytes, got {len(data) + 1}"):
        verify_file(downloaded, target)


def test_under_threshold_root_signing_refused(
    sim: RepositorySimulator, http: httpx.Client, tmp_path: Path
) -> None:
    client = sim.trust_client(tmp_path / "device", http)
    client.refresh()
    # Root v2 signed only by a key that root v1 does not trust.
    intruder = CryptoSigner.generate_ed25519()
    root = sim.repo.load_state().root
    root.signed.version = 2
    replace_role_keys(root.signed, "root", [intruder])
    sign(root, [intruder])
    sim.serve("2.root.json", serialize(root))
    with pytest.raises(VerificationError) as excinfo:
        client.refresh()
    assert "root" in refused(excinfo, tuf_errors.UnsignedMetadataError)


def test_under_threshold_targets_signing_refused(
    sim: RepositorySimulator, http: httpx.Client, tmp_path: Path
) -> None:
    # A valid root v2 requires two targets signatures; targets carries one.
    first_key = sim.signers("targets")[0]
    second_key = CryptoSigner.generate_ed25519()
    root = sim.repo.load_state().root
    root.signed.version = 2
    root.signed.add_key(second_key.public_key, "targets")
    root.signed.roles["targets"].threshold = 2
    sign(root, sim.root_signers())
    sim.serve("2.root.json", serialize(root))

    client = sim.trust_client(tmp_path / "device", http)
    with pytest.raises(VerificationError) as excinfo:
        client.refresh()
    assert "targets" in refused(excinfo, tuf_errors.UnsignedMetadataError)

    # Control: the same chain with both signatures is accepted.
    targets = sim.repo.load_state().targets
    targets.signed.version += 1
    sim.forge_targets(targets, [first_key, second_key])
    client.refresh()


def test_timestamp_version_rollback_refused(
    sim: RepositorySimulator, http: httpx.Client, tmp_path: Path
) -> None:
    old_timestamp = sim.metadata_bytes("timestamp.json")
    sim.publish_release_file("denoiser", "1.0.0", "model.onnx", b"v1")
    client = sim.trust_client(tmp_path / "device", http)
    client.refresh()  # trusts timestamp v2

    sim.serve("timestamp.json", old_timestamp)  # validly signed v1
    with pytest.raises(VerificationError) as excinfo:
        client.refresh()
    message = refused(excinfo, tuf_errors.BadVersionNumberError)
    assert "timestamp version 1" in message


def test_snapshot_rollback_refused(
    sim: RepositorySimulator, http: httpx.Client, tmp_path: Path
) -> None:
    sim.publish_release_file("denoiser", "1.0.0", "model.onnx", b"v1")
    sim.publish_release_file("denoiser", "1.0.1", "model.onnx", b"v2")
    client = sim.trust_client(tmp_path / "device", http)
    client.refresh()  # trusts snapshot v3

    # An attacker holding the timestamp key points a newer timestamp at snapshot v2.
    sim.forge_timestamp(snapshot_version=2, version=sim.repo.version("timestamp") + 1)
    with pytest.raises(VerificationError) as excinfo:
        client.refresh()
    assert "snapshot version must be >= 3" in refused(excinfo, tuf_errors.BadVersionNumberError)


def test_expired_timestamp_refused(
    sim: RepositorySimulator, http: httpx.Client, tmp_path: Path
) -> None:
    # The repository signs with a clock two days behind: its timestamp expired yesterday.
    sim.now -= dt.timedelta(days=2)
    sim.publish_release_file("denoiser", "1.0.0", "model.onnx", b"v1")
    with pytest.raises(VerificationError) as excinfo:
        sim.trust_client(tmp_path / "device", http).refresh()
    assert "timestamp.json is expired" in refused(excinfo, tuf_errors.ExpiredMetadataError)


def test_frozen_timestamp_refused_after_expiry(
    sim: RepositorySimulator,
    http: httpx.Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = sim.trust_client(tmp_path / "device", http)
    client.refresh()
    # The server (or a party in between) keeps replaying the same timestamp while the
    # device's clock moves past its expiry.
    monkeypatch.setattr(trusted_metadata_set, "datetime", _clock_moved_by(dt.timedelta(days=2)))
    with pytest.raises(VerificationError) as excinfo:
        client.refresh()
    assert "expired" in refused(excinfo, tuf_errors.ExpiredMetadataError)


def test_mix_and_match_refused(
    sim: RepositorySimulator, http: httpx.Client, tmp_path: Path
) -> None:
    sim.publish_release_file("denoiser", "1.0.0", "model.onnx", b"v1")
    sim.publish_release_file("denoiser", "1.0.1", "model.onnx", b"v2")
    # Snapshot names targets v3; the server serves targets v2 under that name.
    sim.serve("3.targets.json", sim.metadata_bytes("2.targets.json"))
    with pytest.raises(VerificationError) as excinfo:
        sim.trust_client(tmp_path / "device", http).refresh()
    assert "3.targets.json" in refused(excinfo, tuf_errors.RepositoryError)


def test_fast_forward_recovery_after_timestamp_key_rotation(
    sim: RepositorySimulator, http: httpx.Client, tmp_path: Path
) -> None:
    client = sim.trust_client(tmp_path / "device", http)
    client.refresh()
    # With the stolen timestamp key, an attacker fast-forwards the device to timestamp v1000.
    sim.forge_timestamp(snapshot_version=sim.repo.version("snapshot"), version=1000)
    client.refresh()
    sim.overrides.clear()

    sim.publish_release_file("denoiser", "1.0.0", "model.onnx", b"v1")
    with pytest.raises(VerificationError) as excinfo:
        client.refresh()  # the genuine timestamp v2 now looks like a rollback
    refused(excinfo, tuf_errors.BadVersionNumberError)

    sim.repo.rotate_online_key("timestamp", sim.root_key_dir)
    client.refresh()
    assert client.get_target(MODEL).length == 2
    sim.publish_release_file("denoiser", "1.0.1", "model.onnx", b"v1.1")
    client.refresh()
    assert client.get_target("denoiser/1.0.1/model.onnx").length == 4


def test_root_rotation_over_several_versions(
    sim: RepositorySimulator, http: httpx.Client, tmp_path: Path
) -> None:
    client = sim.trust_client(tmp_path / "device", http)
    client.refresh()
    original_root_keys = sim.root_signers()
    for _ in range(3):
        sim.repo.rotate_root_key(sim.root_key_dir)
    sim.repo.rotate_online_key("snapshot", sim.root_key_dir)
    sim.publish_release_file("denoiser", "1.0.0", "model.onnx", b"v1")
    assert sim.repo.version("root") == 5

    client.refresh()
    assert client.get_target(MODEL).length == 2
    assert (tmp_path / "device" / "root_history" / "5.root.json").is_file()
    # A device that pinned root v1 long ago walks the whole chain too.
    assert sim.trust_client(tmp_path / "late-device", http).get_target(MODEL).length == 2

    # The original root key is revoked: a root v6 signed with it alone is refused.
    root = sim.repo.load_state().root
    root.signed.version = 6
    sign(root, original_root_keys)
    sim.serve("6.root.json", serialize(root))
    with pytest.raises(VerificationError) as excinfo:
        client.refresh()
    assert "root" in refused(excinfo, tuf_errors.UnsignedMetadataError)


def test_revoked_targets_key_signature_refused(
    sim: RepositorySimulator, http: httpx.Client, tmp_path: Path
) -> None:
    revoked_key = sim.signers("targets")
    sim.repo.rotate_online_key("targets", sim.root_key_dir)
    client = sim.trust_client(tmp_path / "device", http)
    client.refresh()

    targets = sim.repo.load_state().targets
    targets.signed.version += 1
    sim.forge_targets(targets, revoked_key)
    with pytest.raises(VerificationError) as excinfo:
        client.refresh()
    assert "targets" in refused(excinfo, tuf_errors.UnsignedMetadataError)

    # Control: the same forged chain signed with the current key is accepted.
    sim.forge_targets(targets, sim.signers("targets"))
    client.refresh()


@pytest.mark.parametrize("name", ["timestamp.json", "2.targets.json"])
def test_oversized_metadata_download_stops_at_cap(
    sim: RepositorySimulator, http: httpx.Client, tmp_path: Path, name: str
) -> None:
    # timestamp.json is capped by the client's configured maximum, targets by the
    # length the snapshot signed.
    sim.publish_release_file("denoiser", "1.0.0", "model.onnx", b"v1")
    chunk = b" " * 65536
    sent: list[int] = []

    def endless() -> Iterator[bytes]:
        while True:
            sent.append(len(chunk))
            yield chunk

    sim.serve(name, endless)
    config = UpdaterConfig(timestamp_max_length=4096)
    with pytest.raises(VerificationError) as excinfo:
        sim.trust_client(tmp_path / "device", http, config=config).refresh()
    refused(excinfo, tuf_errors.DownloadLengthMismatchError)
    assert sum(sent) <= 2 * len(chunk)


def _clock_moved_by(delta: dt.timedelta) -> types.SimpleNamespace:
    # python-tuf takes its reference time from datetime.now() in this one module and offers
    # no clock parameter; a stand-in module moves the device's clock without faketime.
    class MovedDatetime(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> MovedDatetime:
            moved = dt.datetime.now(tz) + delta
            return cls.fromtimestamp(moved.timestamp(), tz)

    return types.SimpleNamespace(datetime=MovedDatetime, timezone=dt.timezone)
