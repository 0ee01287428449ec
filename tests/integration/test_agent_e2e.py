"""A real server and real agent processes over HTTPS: updates, rollbacks, refusals, kill -9.

Every test ends by checking what a person would: which version the server says the device
runs, which slot ``current`` points at, and what the device's runtime actually serves.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeota.agent.driver import running_runtimes
from edgeota.procs import wait_until
from edgeota.releasefolder import load_release
from edgeota.slotinfo import SlotInfo
from harness import Fleet, ServerHandle

COMPONENT = "denoiser"
STEP_TIMEOUT_S = 90


def publish(server: ServerHandle, examples: Path, folder: str, version: str) -> dict[str, Any]:
    return server.admin.publish(load_release(examples / folder), COMPONENT, version)


def deploy(server: ServerHandle, release: dict[str, Any], group: str = "lab") -> None:
    server.admin.deploy(release["id"], group)


def device_named(server: ServerHandle, name: str) -> dict[str, Any] | None:
    return next((d for d in server.admin.devices() if d["name"] == name), None)


def installed(server: ServerHandle, name: str) -> str | None:
    device = device_named(server, name)
    if device is None:
        return None
    return next((c["version"] for c in device["components"] if c["component"] == COMPONENT), None)


def events(server: ServerHandle, name: str) -> list[dict[str, Any]]:
    device = device_named(server, name)
    return [] if device is None else server.admin.events(device["id"], 200)


def wait_installed(
    server: ServerHandle, name: str, version: str, proc: subprocess.Popen[bytes] | None = None
) -> None:
    def done() -> bool:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"agent exited with {proc.returncode} before {version}")
        return installed(server, name) == version

    wait_until(done, STEP_TIMEOUT_S, interval_s=0.3, what=f"{name} on {version}")


def wait_event(server: ServerHandle, name: str, event: str, release_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def done() -> bool:
        found[:] = [
            e for e in events(server, name) if e["event"] == event and e["release_id"] == release_id
        ]
        return bool(found)

    wait_until(done, STEP_TIMEOUT_S, interval_s=0.3, what=f"{name}: {event} of {release_id}")
    return found[0]


def active_slot_info(data_dir: Path) -> SlotInfo:
    return SlotInfo.read(data_dir / "components" / COMPONENT / "current")


def runtime_release(data_dir: Path) -> str:
    """The release the device's runtime is serving right now, asked over its local API."""
    argv = json.loads((data_dir / "test-runtime-port.json").read_text())
    try:
        body = httpx.get(f"http://127.0.0.1:{argv['port']}/healthz", timeout=5).json()
    except httpx.HTTPError:
        return "(not serving)"
    return str(body["release_id"])


def wait_serving(data_dir: Path, release_id: str) -> None:
    wait_until(
        lambda: runtime_release(data_dir) == release_id, 30, what=f"runtime serves {release_id}"
    )


def runtime_processes(data_dir: Path) -> list[int]:
    """Runtime processes serving a slot of ``data_dir`` (whoever started them)."""
    return [pid for pid, slot in running_runtimes().items() if data_dir in slot.parents]


def start(fleet: Fleet, data_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    argv = fleet.agent_argv(data_dir, *extra)
    port = argv[argv.index("--runtime-port") + 1]
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "test-runtime-port.json").write_text(json.dumps({"port": int(port)}))
    proc = fleet.procs.start(argv, fleet.work / f"{data_dir.name}.log")
    fleet.started.append(proc)
    return proc


def stop(fleet: Fleet, proc: subprocess.Popen[bytes]) -> None:
    fleet.procs.stop(proc)


@pytest.fixture
def on_v1(fleet: Fleet, examples: Path) -> tuple[Path, dict[str, Any]]:
    """One agent that has installed and committed v1; the agent is stopped again."""
    v1 = publish(fleet.server, examples, "v1", "1.0.0")
    deploy(fleet.server, v1)
    data_dir = fleet.work / "dev-1"
    proc = start(fleet, data_dir)
    wait_installed(fleet.server, "dev-1", "1.0.0", proc)
    stop(fleet, proc)
    return data_dir, v1


def test_update_then_broken_release_rolls_back(
    fleet: Fleet, examples: Path, on_v1: tuple[Path, dict[str, Any]]
) -> None:
    data_dir, _ = on_v1
    proc = start(fleet, data_dir)
    v2 = publish(fleet.server, examples, "v2", "2.0.0")
    deploy(fleet.server, v2)
    wait_installed(fleet.server, "dev-1", "2.0.0", proc)
    assert active_slot_info(data_dir).release_id == v2["id"]
    wait_serving(data_dir, v2["id"])

    v3 = publish(fleet.server, examples, "v3-broken", "3.0.0")
    deploy(fleet.server, v3)
    rolled = wait_event(fleet.server, "dev-1", "rolled_back", v3["id"])
    assert installed(fleet.server, "dev-1") == "2.0.0"
    assert active_slot_info(data_dir).release_id == v2["id"]
    wait_serving(data_dir, v2["id"])
    failed = [e for e in events(fleet.server, "dev-1") if e["release_id"] == v3["id"]]
    reasons = " ".join(e["reason"] or "" for e in failed)
    assert "NaN" in reasons, rolled
    # The failed release is remembered: no install-fail-rollback loop.
    trials = [e for e in failed if e["event"] == "switched"]
    wait_until(lambda: proc.poll() is None, 1, what="agent alive")
    assert len(trials) == 1


def test_tampered_target_is_refused_and_nothing_installed(
    fleet: Fleet, examples: Path, on_v1: tuple[Path, dict[str, Any]]
) -> None:
    data_dir, v1 = on_v1
    v2 = publish(fleet.server, examples, "v2", "2.0.0")
    model = next(f for f in v2["files"] if f["role"] == "model")
    stored = fleet.server.data_dir / "artifacts" / "sha256" / model["sha256"][:2] / model["sha256"]
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    proc = start(fleet, data_dir)
    deploy(fleet.server, v2)
    failure = wait_event(fleet.server, "dev-1", "download_failed", v2["id"])
    assert "sha256" in (failure["reason"] or "") or "hash" in (failure["reason"] or "")
    assert proc.poll() is None
    assert installed(fleet.server, "dev-1") == "1.0.0"
    assert active_slot_info(data_dir).release_id == v1["id"]
    wait_serving(data_dir, v1["id"])


def test_truncated_target_is_refused(
    fleet: Fleet, examples: Path, on_v1: tuple[Path, dict[str, Any]]
) -> None:
    data_dir, v1 = on_v1
    v2 = publish(fleet.server, examples, "v2", "2.0.0")
    model = next(f for f in v2["files"] if f["role"] == "model")
    stored = fleet.server.data_dir / "artifacts" / "sha256" / model["sha256"][:2] / model["sha256"]
    stored.write_bytes(stored.read_bytes()[: model["length"] // 2])
    start(fleet, data_dir)
    deploy(fleet.server, v2)
    wait_event(fleet.server, "dev-1", "download_failed", v2["id"])
    assert active_slot_info(data_dir).release_id == v1["id"]


def test_older_version_is_refused(
    fleet: Fleet, examples: Path, on_v1: tuple[Path, dict[str, Any]]
) -> None:
    data_dir, _ = on_v1
    proc = start(fleet, data_dir)
    v2 = publish(fleet.server, examples, "v2", "2.0.0")
    deploy(fleet.server, v2)
    wait_installed(fleet.server, "dev-1", "2.0.0", proc)
    v1 = fleet.server.admin.releases(COMPONENT)[-1]
    assert v1["version"] == "1.0.0"
    deploy(fleet.server, v1)
    refusal = wait_event(fleet.server, "dev-1", "update_refused", v1["id"])
    assert "older" in (refusal["reason"] or "") or "down" in (refusal["reason"] or "")
    assert installed(fleet.server, "dev-1") == "2.0.0"
    assert active_slot_info(data_dir).version == "2.0.0"


def test_release_of_another_component_is_refused(
    fleet: Fleet, examples: Path, on_v1: tuple[Path, dict[str, Any]]
) -> None:
    """A compromised server points 'denoiser' at validly signed files of another component."""
    data_dir, v1 = on_v1
    other = fleet.server.admin.publish(load_release(examples / "v2"), "camera-app", "9.0.0")
    db = sqlite3.connect(fleet.server.data_dir / "edgeota.db")
    with db:
        device_id = device_named(fleet.server, "dev-1")["id"]  # type: ignore[index]
        db.execute(
            "UPDATE desired_components SET release_id = ? WHERE device_id = ?",
            (other["id"], device_id),
        )
        db.execute(
            "UPDATE devices SET desired_revision = desired_revision + 1 WHERE id = ?",
            (device_id,),
        )
    db.close()
    start(fleet, data_dir)
    refusal = wait_event(fleet.server, "dev-1", "update_refused", other["id"])
    assert "component" in (refusal["reason"] or "")
    assert active_slot_info(data_dir).release_id == v1["id"]


@pytest.mark.parametrize(
    "fault",
    [
        ("--crash-after-bytes", "20000"),  # mid-download
        ("--crash-at", "download"),
        ("--crash-at", "staged"),
        ("--crash-at", "switched"),
        ("--crash-at", "health"),
        ("--crash-at", "commit"),
    ],
    ids=lambda f: f"{f[0].strip('-')}={f[1]}",
)
def test_kill_9_then_restart_ends_on_a_committed_working_slot(
    fleet: Fleet, examples: Path, on_v1: tuple[Path, dict[str, Any]], fault: tuple[str, str]
) -> None:
    data_dir, _ = on_v1
    v2 = publish(fleet.server, examples, "v2", "2.0.0")
    crashing = start(fleet, data_dir, *fault)
    deploy(fleet.server, v2)
    crashing.wait(timeout=STEP_TIMEOUT_S)
    assert crashing.returncode == -signal.SIGKILL
    journal = json.loads((data_dir / "journal.json").read_text())  # parses: never torn
    assert journal

    restarted = start(fleet, data_dir)
    wait_installed(fleet.server, "dev-1", "2.0.0", restarted)
    assert active_slot_info(data_dir).release_id == v2["id"]
    wait_serving(data_dir, v2["id"])
    committed = [e for e in events(fleet.server, "dev-1") if e["event"] == "committed"]
    assert committed[0]["version"] == "2.0.0"  # newest first
    # The runtime the killed agent left behind was stopped by the restarted one.
    stop(fleet, restarted)
    assert runtime_processes(data_dir) == []


def test_second_agent_on_same_data_dir_is_refused(
    fleet: Fleet, on_v1: tuple[Path, dict[str, Any]]
) -> None:
    data_dir, v1 = on_v1
    first = start(fleet, data_dir)
    wait_serving(data_dir, v1["id"])  # the runtime runs, so the first agent holds the lock
    second = subprocess.run(
        fleet.agent_argv(data_dir), capture_output=True, text=True, timeout=60, check=False
    )
    assert second.returncode != 0
    assert "another agent" in second.stderr.lower() or "lock" in second.stderr.lower()
    assert first.poll() is None


def _forge_server_timestamp(server: ServerHandle, *, expired: bool, wrong_key: bool) -> None:
    """Rewrite the timestamp the server serves: expired, or signed by a key root does not
    trust. The rest of the repository is untouched."""
    from datetime import timedelta

    from edgeota.timeutil import utcnow
    from edgeota.trust.keys import generate_key, load_role_signers
    from edgeota.trust.repository import TufRepository
    from edgeota.trust.state import serialize, sign

    metadata_dir = server.data_dir / "tuf" / "metadata"
    online = server.data_dir / "keys" / "online"
    repo = TufRepository.open(metadata_dir, online)
    state = repo.load_state()
    timestamp = state.timestamp
    timestamp.signed.version += 1
    if expired:
        timestamp.signed.expires = (utcnow() - timedelta(hours=1)).replace(microsecond=0)
    signers = (
        [generate_key(server.data_dir / "attacker-keys", "timestamp")]
        if wrong_key
        else load_role_signers(online, "timestamp", state.root.signed.roles["timestamp"].keyids)
    )
    sign(timestamp, signers)
    (metadata_dir / "timestamp.json").write_bytes(serialize(timestamp))


@pytest.mark.parametrize("attack", ["expired", "wrong_key"])
def test_expired_or_wrongly_signed_metadata_is_refused(
    fleet: Fleet, examples: Path, on_v1: tuple[Path, dict[str, Any]], attack: str
) -> None:
    data_dir, v1 = on_v1
    v2 = publish(fleet.server, examples, "v2", "2.0.0")
    # The server signs v2's deltas in the background, re-signing the timestamp: forge it
    # only after that, or the server's own signature replaces the forgery.
    wait_until(
        lambda: all(
            d["status"] in ("done", "failed", "skipped")
            for d in fleet.server.admin.release(v2["id"])["deltas"]
        ),
        STEP_TIMEOUT_S,
        what="v2's deltas built",
    )
    _forge_server_timestamp(
        fleet.server, expired=attack == "expired", wrong_key=attack == "wrong_key"
    )
    proc = start(fleet, data_dir)
    deploy(fleet.server, v2)
    refusal = wait_event(fleet.server, "dev-1", "update_refused", v2["id"])
    reason = (refusal["reason"] or "").lower()
    assert "timestamp" in reason
    assert ("expired" if attack == "expired" else "unsigned") in reason
    assert proc.poll() is None
    assert installed(fleet.server, "dev-1") == "1.0.0"
    wait_serving(data_dir, v1["id"])
