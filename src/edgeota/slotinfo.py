"""``edgeota-slot.json``: what is installed in one A/B slot.

The agent writes it (atomically, last) when a slot has been staged and verified; the runtime
reads it to find the model file; a slot without it is empty or half-written and is never
switched to.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeota.errors import FormatError
from edgeota.fsutil import atomic_write_text

SLOT_INFO_NAME = "edgeota-slot.json"


@dataclass(frozen=True)
class SlotFile:
    file: str
    role: str
    sha256: str
    length: int
    variant: str | None = None


@dataclass(frozen=True)
class SlotInfo:
    component: str
    version: str
    release_id: str
    files: tuple[SlotFile, ...]
    tolerance: dict[str, float] = field(default_factory=dict)

    def file_with_role(self, role: str) -> SlotFile | None:
        return next((f for f in self.files if f.role == role), None)

    def to_json(self) -> str:
        body: dict[str, Any] = asdict(self)
        body["files"] = [asdict(f) for f in self.files]
        return json.dumps(body, indent=2, sort_keys=True)

    def write(self, slot_dir: Path) -> None:
        atomic_write_text(slot_dir / SLOT_INFO_NAME, self.to_json())

    @classmethod
    def read(cls, slot_dir: Path) -> SlotInfo:
        path = slot_dir / SLOT_INFO_NAME
        try:
            body = json.loads(path.read_text("utf-8"))
            return cls(
                component=str(body["component"]),
                version=str(body["version"]),
                release_id=str(body["release_id"]),
                files=tuple(SlotFile(**f) for f in body["files"]),
                tolerance={str(k): float(v) for k, v in (body.get("tolerance") or {}).items()},
            )
        except FileNotFoundError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise FormatError(f"{path} is not a valid slot description: {e}") from e
