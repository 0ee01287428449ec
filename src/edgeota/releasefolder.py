"""Read what ``edgeota release publish`` is given: a single file, or a folder with
``release.json`` (see docs/release-folder.md)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeota.errors import FormatError, PolicyError
from edgeota.fsutil import safe_join, safe_relative_path
from edgeota.targets import RELEASE_FILE_ROLES

MANIFEST_NAME = "release.json"
_ROLES = RELEASE_FILE_ROLES


@dataclass(frozen=True)
class LocalFile:
    source: Path
    file: str
    role: str
    sha256: str
    length: int
    variant: str | None = None
    tolerance: dict[str, float] | None = None
    # What the server chooses a model variant by (role "model"); None: not given.
    memory_mb: int | None = None
    quality: float | None = None
    arch: tuple[str, ...] | None = None
    accelerator: str | None = None

    def to_api(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "file": self.file,
            "role": self.role,
            "sha256": self.sha256,
            "length": self.length,
            "variant": self.variant,
        }
        if self.tolerance is not None:
            body["tolerance"] = self.tolerance
        for key in ("memory_mb", "quality", "accelerator"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        if self.arch is not None:
            body["arch"] = list(self.arch)
        return body


@dataclass(frozen=True)
class LocalRelease:
    files: tuple[LocalFile, ...]
    hardware: tuple[str, ...] = ("*",)
    needs: dict[str, str] = field(default_factory=dict)


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> tuple[str, int]:
    digest = hashlib.sha256()
    length = 0
    with path.open("rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
            length += len(chunk)
    return digest.hexdigest(), length


def load_release(path: Path) -> LocalRelease:
    """Describe the files to publish; raise FormatError with a hint on anything malformed."""
    if path.is_file():
        role = "model" if path.suffix == ".onnx" else "file"
        digest, length = sha256_file(path)
        return LocalRelease(files=(LocalFile(path, path.name, role, digest, length),))
    if not path.is_dir():
        raise FormatError(f"{path} does not exist; give a model file or a release folder")
    manifest = path / MANIFEST_NAME
    try:
        body = json.loads(manifest.read_text("utf-8"))
    except FileNotFoundError as e:
        raise FormatError(
            f"{path} is a folder without {MANIFEST_NAME}; add one (see docs/release-folder.md)"
        ) from e
    except json.JSONDecodeError as e:
        raise FormatError(f"{manifest} is not valid JSON: {e}") from e
    if not isinstance(body, dict) or body.get("schema") != 1:
        raise FormatError(f'{manifest}: expected an object with "schema": 1')
    entries = body.get("files")
    if not isinstance(entries, list) or not entries:
        raise FormatError(f'{manifest}: "files" must be a non-empty list')
    files = tuple(_load_entry(path, manifest, e) for e in entries)
    hardware = body.get("hardware", ["*"])
    needs = body.get("needs", {})
    if not isinstance(hardware, list) or not all(isinstance(h, str) for h in hardware):
        raise FormatError(f'{manifest}: "hardware" must be a list of strings')
    if not isinstance(needs, dict):
        raise FormatError(f'{manifest}: "needs" must be an object')
    return LocalRelease(files=files, hardware=tuple(hardware), needs=dict(needs))


def _load_entry(folder: Path, manifest: Path, entry: Any) -> LocalFile:
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise FormatError(f'{manifest}: each file needs a "path" string, got {entry!r}')
    name = entry["path"]
    role = entry.get("role", "file")
    if role not in _ROLES:
        raise FormatError(f"{manifest}: file {name!r} has role {role!r}; use one of {_ROLES}")
    try:
        safe_relative_path(name)
        source = safe_join(folder, name)
    except PolicyError as e:
        raise FormatError(f"{manifest}: {e}") from e
    if not source.is_file():
        raise FormatError(f"{manifest}: lists {name!r} but {source} does not exist")
    tolerance = entry.get("tolerance")
    if tolerance is not None and (
        not isinstance(tolerance, dict)
        or not all(isinstance(v, int | float) for v in tolerance.values())
    ):
        raise FormatError(f"{manifest}: tolerance of {name!r} must map names to numbers")
    digest, length = sha256_file(source)
    return LocalFile(
        source=source,
        file=name,
        role=role,
        sha256=digest,
        length=length,
        variant=entry.get("variant"),
        tolerance=None if tolerance is None else {k: float(v) for k, v in tolerance.items()},
        **_variant_keys(manifest, name, entry),
    )


def _variant_keys(manifest: Path, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """``memory_mb``, ``quality``, ``arch`` and ``accelerator`` of an entry, type-checked."""
    keys: dict[str, Any] = {}
    memory, quality = entry.get("memory_mb"), entry.get("quality")
    arch, accelerator = entry.get("arch"), entry.get("accelerator")
    if memory is not None:
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 0:
            raise FormatError(f"{manifest}: memory_mb of {name!r} must be a whole number of MiB")
        keys["memory_mb"] = memory
    if quality is not None:
        if isinstance(quality, bool) or not isinstance(quality, int | float):
            raise FormatError(f"{manifest}: quality of {name!r} must be a number")
        keys["quality"] = float(quality)
    if arch is not None:
        if not isinstance(arch, list) or not arch or not all(isinstance(a, str) for a in arch):
            raise FormatError(f"{manifest}: arch of {name!r} must be a list of strings")
        keys["arch"] = tuple(arch)
    if accelerator is not None:
        if not isinstance(accelerator, str):
            raise FormatError(f"{manifest}: accelerator of {name!r} must be a string")
        keys["accelerator"] = accelerator
    return keys
