"""The server's TufRepository: publishing, re-signing, key rotation, serving names safely."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest

from edgeota.errors import PolicyError
from edgeota.trust import ExpiryPolicy, NewTarget, TufRepository, init_repository
from edgeota.trust.keys import stored_keyids
from edgeota.trust.repository import KEPT_VERSIONS
from edgeota.trust.testing import RepositorySimulator

SHA = "ab" * 32


@pytest.fixture
def sim(tmp_path: Path) -> RepositorySimulator:
    return RepositorySimulator(tmp_path / "server")


def versions(repo: TufRepository) -> dict[str, int]:
    return {role: repo.version(role) for role in ("root", "targets", "snapshot", "timestamp")}


def test_publish_bumps_versions(sim: RepositorySimulator) -> None:
    assert versions(sim.repo) == {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1}
    new_version = sim.repo.add_targets(
        [NewTarget("denoiser/1.0.0/model.onnx", 10, SHA, {"edgeota": {"schema": 1}})]
    )
    assert new_version == 2
    assert versions(sim.repo) == {"root": 1, "targets": 2, "snapshot": 2, "timestamp": 2}

    # Consistent snapshots: older versions stay servable for clients mid-update.
    names = {p.name for p in sim.metadata_dir.iterdir()}
    assert {"1.targets.json", "2.targets.json", "1.snapshot.json", "2.snapshot.json"} <= names
    snapshot = json.loads(sim.metadata_bytes("2.snapshot.json"))["signed"]
    assert snapshot["meta"]["targets.json"]["version"] == 2
    assert snapshot["meta"]["targets.json"]["length"] == len(sim.metadata_bytes("2.targets.json"))
    timestamp = json.loads(sim.metadata_bytes("timestamp.json"))["signed"]
    assert timestamp["meta"]["snapshot.json"]["version"] == 2

    listed = sim.repo.targets()["denoiser/1.0.0/model.onnx"]
    assert (listed.length, listed.hashes, listed.custom) == (
        10,
        {"sha256": SHA},
        {"edgeota": {"schema": 1}},
    )
    sim.repo.add_targets([NewTarget("denoiser/1.0.0/model.onnx", 11, "cd" * 32)])
    assert sim.repo.targets()["denoiser/1.0.0/model.onnx"].length == 11  # replaced


def test_second_writer_sees_first_writers_targets(sim: RepositorySimulator) -> None:
    other = TufRepository.open(sim.metadata_dir, sim.online_key_dir)
    sim.repo.add_targets([NewTarget("a/1.0.0/x", 1, SHA)])
    other.add_targets([NewTarget("b/1.0.0/y", 1, SHA)])
    assert set(sim.repo.targets()) == {"a/1.0.0/x", "b/1.0.0/y"}
    assert sim.repo.version("targets") == 3


def test_refresh_expiring_resigns_timestamp(sim: RepositorySimulator) -> None:
    start = sim.now
    assert sim.repo.refresh_expiring() == []

    sim.now = start + dt.timedelta(hours=13)  # inside the 12 h margin of a 24 h timestamp
    assert sim.repo.refresh_expiring() == ["timestamp"]
    assert versions(sim.repo)["timestamp"] == 2
    expires = sim.repo.load_state().expires("timestamp")
    assert expires == (sim.now + dt.timedelta(days=1)).replace(microsecond=0)
    assert sim.repo.refresh_expiring() == []

    sim.now = start + dt.timedelta(days=5)  # snapshot (7 d, 3 d margin) is due as well
    assert sim.repo.refresh_expiring() == ["snapshot", "timestamp"]
    assert versions(sim.repo) == {"root": 1, "targets": 1, "snapshot": 2, "timestamp": 3}


def test_refresh_expiring_heals_interrupted_key_rotation(sim: RepositorySimulator) -> None:
    old_timestamp = sim.metadata_bytes("timestamp.json")
    sim.repo.rotate_online_key("timestamp", sim.root_key_dir)
    # As if the process died after writing the new root, before the new timestamp.
    (sim.metadata_dir / "timestamp.json").write_bytes(old_timestamp)
    assert sim.repo.refresh_expiring() == ["timestamp"]
    assert sim.repo.refresh_expiring() == []


def test_rotate_online_key_revokes_old_key(sim: RepositorySimulator) -> None:
    (old_keyid,) = stored_keyids(sim.online_key_dir, "targets")
    sim.repo.rotate_online_key("targets", sim.root_key_dir)

    root = sim.repo.load_state().root.signed
    assert root.version == 2
    (new_keyid,) = root.roles["targets"].keyids
    assert new_keyid != old_keyid and old_keyid not in root.keys
    assert stored_keyids(sim.online_key_dir, "targets") == {new_keyid}
    assert versions(sim.repo) == {"root": 2, "targets": 2, "snapshot": 2, "timestamp": 2}
    assert set(sim.repo.load_state().targets.signatures) == {new_keyid}


def test_root_key_not_needed_for_publishing(sim: RepositorySimulator) -> None:
    for key in sim.root_key_dir.iterdir():
        key.unlink()
    repo = TufRepository.open(sim.metadata_dir, sim.online_key_dir)
    repo.add_targets([NewTarget("a/1.0.0/x", 1, SHA)])
    with pytest.raises(FileNotFoundError, match="0 of the 1 root key"):
        repo.rotate_online_key("timestamp", sim.root_key_dir)


def test_key_files_are_private(sim: RepositorySimulator) -> None:
    for key_dir in (sim.online_key_dir, sim.root_key_dir):
        assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
        for key in key_dir.iterdir():
            assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stored_keyids(sim.online_key_dir, "root") == set()
    assert len(stored_keyids(sim.root_key_dir, "root")) == 1


def test_init_refuses_existing_repository(sim: RepositorySimulator) -> None:
    root_before = sim.metadata_bytes("root.json")
    with pytest.raises(FileExistsError, match=r"already holds TUF metadata.*TufRepository\.open"):
        init_repository(
            sim.metadata_dir,
            sim.online_key_dir,
            sim.root_key_dir,
            ExpiryPolicy(),
            sim.now,
        )
    assert sim.metadata_bytes("root.json") == root_before
    assert len(stored_keyids(sim.root_key_dir, "root")) == 1


def test_init_refuses_root_key_among_online_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="root key apart"):
        init_repository(
            tmp_path / "m", tmp_path / "k", tmp_path / "k", ExpiryPolicy(), dt.datetime.now(dt.UTC)
        )


@pytest.mark.parametrize(
    "name",
    [
        "../keys-online/targets.pem",
        "..%2Froot.json",
        "/etc/passwd",
        ".lock",
        "1.root.json/../../x",
        "0.root.json",
        "-1.root.json",
        "timestamp.json.tmp",
        ".timestamp.json.abc.tmp",
        "1.root.json\x00",
        "1.delegated.json",
        "",
    ],
)
def test_metadata_name_traversal_refused(sim: RepositorySimulator, name: str) -> None:
    with pytest.raises(PolicyError, match="not a TUF metadata file name"):
        sim.repo.metadata_file(name)


@pytest.mark.parametrize(
    "name", ["1.root.json", "root.json", "timestamp.json", "12.snapshot.json", "3.targets.json"]
)
def test_metadata_names_served(sim: RepositorySimulator, name: str) -> None:
    assert sim.repo.metadata_file(name) == sim.metadata_dir / name


def test_expiry_policy_rejects_margin_beyond_expiry() -> None:
    with pytest.raises(ValueError, match="timestamp"):
        ExpiryPolicy(timestamp_expiry_s=3600, timestamp_refresh_margin_s=3600)


def test_naive_clock_refused(sim: RepositorySimulator) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sim.repo.refresh_expiring(dt.datetime(2030, 1, 1))


def test_old_snapshot_and_targets_versions_are_pruned(sim: RepositorySimulator) -> None:
    """Every publication writes two files; only the newest KEPT_VERSIONS of each stay."""
    for i in range(KEPT_VERSIONS + 4):
        sim.repo.add_targets([NewTarget(f"a/1.0.{i}/x", 1, SHA)])
    sim.publish_release_file("denoiser", "2.0.0", "model.onnx", b"model")
    current = sim.repo.version("targets")
    assert current == KEPT_VERSIONS + 6
    names = {p.name for p in sim.metadata_dir.iterdir()}
    for role in ("targets", "snapshot"):
        kept = sorted(int(n.split(".")[0]) for n in names if n.endswith(f".{role}.json"))
        assert kept == list(range(current - KEPT_VERSIONS + 1, current + 1))
    assert "1.root.json" in names  # roots are never pruned
    # A device that pinned the first root still verifies the newest targets.
    http = sim.http_client()
    client = sim.trust_client(sim.metadata_dir.parent / "device", http)
    client.refresh()
    assert client.get_target("denoiser/2.0.0/model.onnx").length == len(b"model")


def test_removed_targets_are_unlisted_in_a_new_version(sim: RepositorySimulator) -> None:
    sim.repo.add_targets([NewTarget("a/1.0.0/x", 1, SHA), NewTarget("a/2.0.0/x", 1, SHA)])
    before = sim.repo.version("targets")
    assert sim.repo.remove_targets(["a/1.0.0/x", "never/1.0.0/listed"]) == before + 1
    assert set(sim.repo.targets()) == {"a/2.0.0/x"}
    assert sim.repo.version("timestamp") == before + 1
    # Nothing listed to remove: nothing is signed.
    assert sim.repo.remove_targets(["a/1.0.0/x"]) == before + 1
