"""The one schema of what edgeota signs about each target file.

Every TUF target edgeota publishes carries, in its ``custom`` field, an object under the key
``"edgeota"``; the agent decides only on these signed values, never on what a check-in
answer says. Later features extend this schema with new optional keys; they never change the
meaning of an existing one. Version 1::

    {
      "edgeota": {
        "schema": 1,
        "component": "denoiser",          # the updatable unit on the device
        "version": "2.0.0",               # semver of the release
        "release_id": "rel-3f1c...",      # content-derived unique ID of the release
        "role": "model",                  # model | probe | file | patch | container | image | layer
        "file": "model.onnx",             # path inside the installed slot (relative, no ..)
        "variant": "fp32",                # model variant, or null
        "hardware": ["*"],                # device hardware classes it may install on; "*" = any
        "needs": {"app": ">=2.1.0"},      # other components' versions it needs
        "delta_base": null,               # for role=patch: sha256 of the file it applies to
        "tolerance": {"max_abs_error": "0.05"} # for role=probe: the health-check bounds
      }
    }

Optional keys, present only when set (targets without them sign exactly as before):

- ``memory_mb`` (integer, role=model): the variant's estimated memory need in MiB;
- ``quality`` (decimal string, role=model): the variant's quality score, higher is better,
  comparable between the variants of one release;
- ``arch`` (list of strings, role=model): CPU architectures the variant runs on
  (``platform.machine()`` names such as ``x86_64``, ``aarch64``); absent: any;
- ``accelerator`` (string, role=model): an accelerator the variant needs (e.g. ``cuda``);
  absent: none.

Container components (docs/containers.md) use three more roles: ``container`` (the
container settings, ``container.json``), ``image`` (the image's docker-archive
``manifest.json``) and ``layer`` (one image layer, named by its sha256, so a layer the device
already has is not sent again).

The server chooses each device's variant with these; the probe set's ``tolerance`` may also
carry ``max_latency_ms`` and ``max_peak_rss_mb``, budgets the runtime must stay within.

Numbers that are not integers are written as decimal strings: TUF signs canonical JSON,
which has no floating-point numbers.

Target paths are ``<component>/<version>/<file>``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import semver

from edgeota.errors import FormatError, PolicyError
from edgeota.fsutil import safe_relative_path

SCHEMA_VERSION = 1
CUSTOM_KEY = "edgeota"
ROLES = frozenset({"model", "probe", "file", "patch", "container", "image", "layer"})
# The file roles a published release may have (patches are made by the server).
RELEASE_FILE_ROLES = ("model", "probe", "file", "container", "image", "layer")
ANY_HARDWARE = "*"

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_component_name(name: str) -> str:
    """Return ``name`` if it is a valid component name, else raise PolicyError."""
    if not _NAME_RE.match(name) or ".." in name:
        raise PolicyError(
            f"invalid component name {name!r}: use 1-64 lowercase letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return name


def parse_version(text: str) -> semver.Version:
    """Parse a semantic version such as ``2.1.0`` or ``2.1.0-rc.1``."""
    try:
        return semver.Version.parse(text)
    except (ValueError, TypeError) as e:
        raise PolicyError(f"invalid version {text!r}: expected semver such as 1.2.3") from e


def target_path(component: str, version: str, file: str) -> str:
    """The TUF target path of one file of a release."""
    check_component_name(component)
    parse_version(version)
    return f"{component}/{version}/{safe_relative_path(file)}"


@dataclass(frozen=True)
class TargetCustom:
    """The signed edgeota facts about one target file."""

    component: str
    version: str
    release_id: str
    role: str
    file: str
    variant: str | None = None
    hardware: tuple[str, ...] = (ANY_HARDWARE,)
    needs: dict[str, str] = field(default_factory=dict)
    delta_base: str | None = None
    tolerance: dict[str, float] | None = None
    memory_mb: int | None = None
    quality: float | None = None
    arch: tuple[str, ...] | None = None
    accelerator: str | None = None

    def __post_init__(self) -> None:
        check_component_name(self.component)
        parse_version(self.version)
        safe_relative_path(self.file)
        if self.role not in ROLES:
            raise PolicyError(f"unknown target role {self.role!r}; expected one of {sorted(ROLES)}")
        if not self.release_id:
            raise PolicyError("a target must name its release_id")
        if self.memory_mb is not None and self.memory_mb < 0:
            raise PolicyError(f"memory_mb must not be negative, got {self.memory_mb}")
        if self.quality is not None and not math.isfinite(self.quality):
            raise PolicyError(f"quality must be a finite number, got {self.quality}")

    def fits_hardware(self, hardware_class: str) -> bool:
        return ANY_HARDWARE in self.hardware or hardware_class in self.hardware

    def to_custom(self) -> dict[str, Any]:
        """The dict to store as the TUF target's ``custom`` field."""
        body: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "component": self.component,
            "version": self.version,
            "release_id": self.release_id,
            "role": self.role,
            "file": self.file,
            "variant": self.variant,
            "hardware": list(self.hardware),
            "needs": dict(self.needs),
            "delta_base": self.delta_base,
        }
        if self.tolerance is not None:
            body["tolerance"] = {k: repr(float(v)) for k, v in self.tolerance.items()}
        if self.memory_mb is not None:
            body["memory_mb"] = int(self.memory_mb)
        if self.quality is not None:
            body["quality"] = repr(float(self.quality))
        if self.arch is not None:
            body["arch"] = list(self.arch)
        if self.accelerator is not None:
            body["accelerator"] = self.accelerator
        return {CUSTOM_KEY: body}

    @classmethod
    def from_custom(cls, custom: Any) -> TargetCustom:
        """Parse a TUF target's ``custom`` field; raise FormatError when it is not ours."""
        if not isinstance(custom, dict) or not isinstance(custom.get(CUSTOM_KEY), dict):
            raise FormatError(
                f"target has no '{CUSTOM_KEY}' custom field; it was not published by edgeota"
            )
        body = custom[CUSTOM_KEY]
        schema = body.get("schema")
        if not isinstance(schema, int) or schema < 1:
            raise FormatError(f"target custom field has invalid schema {schema!r}")
        try:
            hardware = body.get("hardware", [ANY_HARDWARE])
            needs = body.get("needs") or {}
            tolerance = body.get("tolerance")
            if not isinstance(hardware, list) or not all(isinstance(h, str) for h in hardware):
                raise FormatError("'hardware' must be a list of strings")
            if not isinstance(needs, dict):
                raise FormatError("'needs' must be an object")
            if tolerance is not None and not isinstance(tolerance, dict):
                raise FormatError("'tolerance' must be an object")
            return cls(
                component=str(body["component"]),
                version=str(body["version"]),
                release_id=str(body["release_id"]),
                role=str(body["role"]),
                file=str(body["file"]),
                variant=None if body.get("variant") is None else str(body["variant"]),
                hardware=tuple(hardware),
                needs={str(k): str(v) for k, v in needs.items()},
                delta_base=None if body.get("delta_base") is None else str(body["delta_base"]),
                tolerance=None
                if tolerance is None
                else {str(k): float(v) for k, v in tolerance.items()},
                **_variant_keys(body),
            )
        except KeyError as e:
            raise FormatError(f"target custom field lacks required key {e.args[0]!r}") from e
        except ValueError as e:
            raise FormatError(f"target custom field is invalid: {e}") from e
        except PolicyError as e:
            raise FormatError(f"target custom field is invalid: {e}") from e


def _variant_keys(body: dict[str, Any]) -> dict[str, Any]:
    """The optional variant keys of a custom body, type-checked (FormatError otherwise)."""
    keys: dict[str, Any] = {}
    memory = body.get("memory_mb")
    if memory is not None:
        if isinstance(memory, bool) or not isinstance(memory, int):
            raise FormatError(f"'memory_mb' must be an integer, not {memory!r}")
        keys["memory_mb"] = memory
    quality = body.get("quality")
    if quality is not None:
        if not isinstance(quality, str):
            raise FormatError(f"'quality' must be a decimal string, not {quality!r}")
        keys["quality"] = float(quality)  # ValueError -> FormatError in the caller
    arch = body.get("arch")
    if arch is not None:
        if not isinstance(arch, list) or not all(isinstance(a, str) for a in arch):
            raise FormatError("'arch' must be a list of strings")
        keys["arch"] = tuple(arch)
    accelerator = body.get("accelerator")
    if accelerator is not None:
        if not isinstance(accelerator, str):
            raise FormatError(f"'accelerator' must be a string, not {accelerator!r}")
        keys["accelerator"] = accelerator
    return keys


def _parse_tolerance(raw: dict[Any, Any]) -> dict[str, float]:
    out = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise FormatError(f"tolerance {key!r} must be a decimal string, not {value!r}")
        out[str(key)] = float(value)
    return out


@dataclass(frozen=True)
class VerifiedTarget:
    """A target whose metadata passed TUF verification: what the agent may download and trust.

    ``url`` is where the bytes are (consistent-snapshot name); the bytes themselves still
    have to match ``length`` and ``sha256`` before use.
    """

    path: str
    length: int
    sha256: str
    custom: TargetCustom
    url: str
