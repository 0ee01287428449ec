"""Apply refuses wrong bases and damaged patches, and never touches OUT unless it succeeds."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgeota.delta.apply as apply_module
from edgeota.delta import apply_patch, create_patch, read_patch_info
from edgeota.delta.format import DIGEST_SIZE
from edgeota.errors import FormatError, InsufficientSpaceError, VerificationError

SENTINEL = b"the previous contents of OUT"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    old_bytes = rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    new_bytes = old_bytes[:1000] + os.urandom(5000) + old_bytes[1000:250_000]
    paths = {
        "old": tmp_path / "old.bin",
        "new": tmp_path / "new.bin",
        "patch": tmp_path / "p.delta",
        "out": tmp_path / "out" / "model.bin",
    }
    paths["old"].write_bytes(old_bytes)
    paths["new"].write_bytes(new_bytes)
    create_patch(paths["old"], paths["new"], paths["patch"])
    paths["out"].parent.mkdir()
    paths["out"].write_bytes(SENTINEL)
    return paths


def assert_out_untouched(files: dict[str, Path]) -> None:
    assert files["out"].read_bytes() == SENTINEL
    assert sorted(p.name for p in files["out"].parent.iterdir()) == ["model.bin"]


def reseal(data: bytes) -> bytes:
    """Recompute the trailing checksum, as an attacker who edits a patch would."""
    body = data[:-DIGEST_SIZE]
    return body + hashlib.sha256(body).digest()


def test_apply_replaces_out_with_the_new_file(files: dict[str, Path]) -> None:
    apply_patch(files["old"], files["patch"], files["out"])
    assert files["out"].read_bytes() == files["new"].read_bytes()
    assert sorted(p.name for p in files["out"].parent.iterdir()) == ["model.bin"]


def test_patch_for_another_base_names_both_hashes(files: dict[str, Path]) -> None:
    other = files["old"].with_name("other.bin")
    data = bytearray(files["old"].read_bytes())
    data[12345] ^= 1
    other.write_bytes(bytes(data))
    with pytest.raises(VerificationError) as e:
        apply_patch(other, files["patch"], files["out"])
    want = hashlib.sha256(files["old"].read_bytes()).hexdigest()
    got = hashlib.sha256(bytes(data)).hexdigest()
    assert want in str(e.value)
    assert got in str(e.value)
    assert_out_untouched(files)


def test_base_of_another_length_is_refused(files: dict[str, Path]) -> None:
    short = files["old"].with_name("short.bin")
    short.write_bytes(files["old"].read_bytes()[:-1])
    with pytest.raises(VerificationError, match="not the base"):
        apply_patch(short, files["patch"], files["out"])
    assert_out_untouched(files)


@pytest.mark.parametrize("keep", [0, 10, 200, -1, -40])
def test_truncated_patch_is_refused(files: dict[str, Path], keep: int) -> None:
    data = files["patch"].read_bytes()
    files["patch"].write_bytes(data[:keep])
    with pytest.raises(FormatError):
        apply_patch(files["old"], files["patch"], files["out"])
    assert_out_untouched(files)


def test_every_corrupt_byte_is_refused(files: dict[str, Path]) -> None:
    data = files["patch"].read_bytes()
    for pos in range(0, len(data), max(1, len(data) // 97)):
        damaged = bytearray(data)
        damaged[pos] ^= 0x40
        files["patch"].write_bytes(bytes(damaged))
        with pytest.raises(FormatError, match=r"corrupt|magic"):
            apply_patch(files["old"], files["patch"], files["out"])
        with pytest.raises(FormatError):
            read_patch_info(files["patch"])
    assert_out_untouched(files)


def test_resealed_patch_that_builds_the_wrong_bytes_is_refused(files: dict[str, Path]) -> None:
    data = bytearray(files["patch"].read_bytes())
    data[64] ^= 1  # first byte of NEW's declared sha256
    files["patch"].write_bytes(reseal(bytes(data)))
    with pytest.raises(VerificationError, match="does not match"):
        apply_patch(files["old"], files["patch"], files["out"])
    assert_out_untouched(files)


def test_unknown_format_version_is_refused(files: dict[str, Path]) -> None:
    data = bytearray(files["patch"].read_bytes())
    data[8] = 2
    files["patch"].write_bytes(reseal(bytes(data)))
    with pytest.raises(FormatError, match="version 2 is not supported"):
        apply_patch(files["old"], files["patch"], files["out"])
    assert_out_untouched(files)


def test_out_equal_to_old_is_refused(files: dict[str, Path]) -> None:
    before = files["old"].read_bytes()
    with pytest.raises(ValueError, match="is OLD"):
        apply_patch(files["old"], files["patch"], files["old"])
    link = files["old"].with_name("hardlink.bin")
    os.link(files["old"], link)
    with pytest.raises(ValueError, match="is OLD"):
        apply_patch(files["old"], files["patch"], link)
    with pytest.raises(ValueError, match="is the patch"):
        apply_patch(files["old"], files["patch"], files["patch"])
    assert files["old"].read_bytes() == before


def test_disk_full_while_writing(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    written = 0

    def write(self: Any, data: bytes) -> None:
        nonlocal written
        written += len(data)
        if written > 100_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, data)

    original = apply_module.HashingSink.write
    monkeypatch.setattr(apply_module.HashingSink, "write", write)
    with pytest.raises(InsufficientSpaceError, match="disk full"):
        apply_patch(files["old"], files["patch"], files["out"])
    assert_out_untouched(files)


def test_not_enough_free_space_is_reported_before_writing(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(files["out"].parent)
    monkeypatch.setattr(apply_module.shutil, "disk_usage", lambda _: usage._replace(free=1000))
    with pytest.raises(InsufficientSpaceError, match="needs"):
        apply_patch(files["old"], files["patch"], files["out"])
    assert_out_untouched(files)


def test_old_changing_during_apply_is_caught(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apply_module.OldFile, "read", lambda self, off, n: b"\x00" * n)
    with pytest.raises(VerificationError, match="does not match"):
        apply_patch(files["old"], files["patch"], files["out"])
    assert_out_untouched(files)
