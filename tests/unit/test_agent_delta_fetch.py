"""The agent's delta path: which patch it uses, and the full file whenever the patch fails.

Real patches (``edgeota.delta``) on small generic files; the downloader is a fake that
serves bytes by sha256 (the real one's verification is tested on its own).
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

from edgeota.agent.delta_fetch import DeltaFetcher, DeltaPlan, committed_bases
from edgeota.delta import create_patch
from edgeota.errors import PolicyError
from edgeota.slotinfo import SlotFile, SlotInfo
from edgeota.targets import TargetCustom, VerifiedTarget

RELEASE = "rel-2"
OLD = random.Random(1).randbytes(64 * 1024)
NEW = OLD[:5000] + b"new weights" * 50 + OLD[5550:]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def target(
    path: str, data: bytes, *, role: str = "model", base: str | None = None, release: str = RELEASE
) -> VerifiedTarget:
    custom = TargetCustom(
        component="denoiser",
        version="2.0.0",
        release_id=release,
        role=role,
        file="model.onnx",
        delta_base=base,
    )
    return VerifiedTarget(path, len(data), sha(data), custom, f"http://files.test/{path}")


class FakeFetcher:
    def __init__(self, downloads: Path) -> None:
        self.dir = downloads
        self.blobs: dict[str, bytes] = {}  # sha256 -> the bytes served for it
        self.fetched: list[str] = []

    def fetch(self, target: VerifiedTarget, cancel: threading.Event | None = None) -> Path:
        self.fetched.append(target.path)
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / target.sha256
        path.write_bytes(self.blobs[target.sha256])
        return path

    def bytes_needed(self, target: VerifiedTarget) -> int:
        return target.length

    def purge(self, keep: Collection[str] = ()) -> int:
        return 0

    def remove(self, sha256s: Collection[str]) -> int:
        for s in sha256s:
            (self.dir / s).unlink(missing_ok=True)
        return len(sha256s)


@pytest.fixture
def slot(tmp_path: Path) -> Path:
    """A committed slot holding OLD as model.onnx."""
    slot_dir = tmp_path / "slots" / "a"
    slot_dir.mkdir(parents=True)
    (slot_dir / "model.onnx").write_bytes(OLD)
    files = (SlotFile("model.onnx", "model", sha(OLD), len(OLD)),)
    SlotInfo("denoiser", "1.0.0", "rel-1", files).write(slot_dir)
    return slot_dir


@pytest.fixture
def patch_bytes(tmp_path: Path) -> bytes:
    (tmp_path / "old").write_bytes(OLD)
    (tmp_path / "new").write_bytes(NEW)
    create_patch(tmp_path / "old", tmp_path / "new", tmp_path / "p")
    data = (tmp_path / "p").read_bytes()
    assert len(data) < len(NEW) // 4
    return data


def plan_for(slot: Path, *patches: VerifiedTarget) -> DeltaPlan:
    signed = {p.path: p for p in patches}

    def get_target(path: str) -> VerifiedTarget:
        if path not in signed:
            raise PolicyError(f"{path} is not signed")
        return signed[path]

    return DeltaPlan.build(
        get_target,
        [*signed, "denoiser/2.0.0/deltas/missing.patch"],
        component="denoiser",
        version="2.0.0",
        release_id=RELEASE,
        hardware_class="x86-64",
        base_dir=slot,
    )


def test_patch_is_chosen_only_for_the_committed_base_and_when_smaller(
    slot: Path, patch_bytes: bytes
) -> None:
    full = target("denoiser/2.0.0/model.onnx", NEW)
    good = target("d/good.patch", patch_bytes, role="patch", base=sha(OLD))
    other_base = target("d/other.patch", patch_bytes[:-1], role="patch", base=sha(b"other"))
    larger = target("d/larger.patch", NEW + b"x", role="patch", base=sha(OLD))
    other_release = target(
        "d/rel.patch", patch_bytes[:-2], role="patch", base=sha(OLD), release="rel-9"
    )
    not_a_patch = target("d/model.patch", patch_bytes[:-3], base=sha(OLD))
    plan = plan_for(slot, good, other_base, larger, other_release, not_a_patch)
    assert plan.choose(full, set()) == good
    assert plan.choose(full, {good.sha256}) is None
    # A base that no longer has its recorded length is no base.
    (slot / "model.onnx").write_bytes(OLD[:-1])
    assert committed_bases(slot) == {}
    assert committed_bases(None) == {}


def test_delta_rebuilds_the_file_and_costs_the_patch(
    tmp_path: Path, slot: Path, patch_bytes: bytes
) -> None:
    full = target("denoiser/2.0.0/model.onnx", NEW)
    patch = target("d/good.patch", patch_bytes, role="patch", base=sha(OLD))
    fetcher = FakeFetcher(tmp_path / "downloads")
    fetcher.blobs[patch.sha256] = patch_bytes
    reports: list[tuple[str, dict[str, Any]]] = []
    got = DeltaFetcher(fetcher, fetcher.dir).fetch(
        full, plan_for(slot, patch), report=lambda r, d: reports.append((r, d))
    )
    assert got.via_delta
    assert got.downloaded_bytes == len(patch_bytes)
    assert got.path == fetcher.dir / full.sha256
    assert got.path.read_bytes() == NEW
    assert fetcher.fetched == [patch.path]  # never the full file
    assert not (fetcher.dir / patch.sha256).exists()  # the patch is not kept
    assert reports == []


@pytest.mark.parametrize("fault", ["corrupt_patch", "wrong_output", "changed_base"])
def test_failed_delta_falls_back_to_the_full_file_once(
    tmp_path: Path, slot: Path, patch_bytes: bytes, fault: str
) -> None:
    full = target("denoiser/2.0.0/model.onnx", NEW)
    patch = target("d/good.patch", patch_bytes, role="patch", base=sha(OLD))
    fetcher = FakeFetcher(tmp_path / "downloads")
    fetcher.blobs[full.sha256] = NEW
    fetcher.blobs[patch.sha256] = patch_bytes
    plan = plan_for(slot, patch)
    if fault == "corrupt_patch":  # bytes the real downloader would refuse; apply refuses too
        fetcher.blobs[patch.sha256] = patch_bytes[:100] + b"\0" + patch_bytes[101:]
    elif fault == "wrong_output":  # a validly built patch that makes another file
        full = target("denoiser/2.0.0/model.onnx", NEW + b"!")
        fetcher.blobs[full.sha256] = NEW + b"!"
    else:  # the base changed on disk after its slot was verified (same length)
        (slot / "model.onnx").write_bytes(OLD[:-1] + b"?")
    reports: list[tuple[str, dict[str, Any]]] = []
    deltas = DeltaFetcher(fetcher, fetcher.dir)
    got = deltas.fetch(full, plan, report=lambda r, d: reports.append((r, d)))
    assert not got.via_delta
    assert got.path.read_bytes() == fetcher.blobs[full.sha256]
    assert got.downloaded_bytes == patch.length + full.length
    assert fetcher.fetched == [patch.path, full.path]
    ((reason, detail),) = reports
    assert "full file" in reason
    assert detail["file"] == "model.onnx" and detail["patch"] == patch.path
    assert sorted(p.name for p in fetcher.dir.iterdir()) == [full.sha256]  # nothing left over

    # The same patch is not tried again by this agent.
    got.path.unlink()
    again = deltas.fetch(full, plan, report=lambda r, d: reports.append((r, d)))
    assert not again.via_delta
    assert fetcher.fetched[-1] == full.path and len(reports) == 1
