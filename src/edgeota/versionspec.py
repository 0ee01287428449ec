"""Version specs: ``*``, ``1.2.0``, or clauses like ``>=1.0.0,<2.0.0`` (all must hold).

Used by dynamic groups (a filter on an installed version) and by the needs between
components (:mod:`edgeota.needs`). Pure functions: ``check_spec`` validates a spec when it is
written down, ``matches`` tests an installed version against it.
"""

from __future__ import annotations

import semver

from edgeota.errors import PolicyError
from edgeota.targets import parse_version

ANY = "*"
_OPERATORS = (">=", "<=", "==", "!=", ">", "<")  # two-character ones first: ">=" is not ">"


def _clauses(spec: str) -> list[tuple[str, semver.Version]]:
    clauses = []
    for raw in spec.split(","):
        text = raw.strip()
        op = next((o for o in _OPERATORS if text.startswith(o)), None)
        version = text[len(op) :].strip() if op else text
        clauses.append((op or "==", parse_version(version)))
    return clauses


def check_spec(spec: str) -> str:
    """Return ``spec`` if it parses, else raise ValueError saying what a spec looks like."""
    if spec.strip() == ANY:
        return ANY
    try:
        _clauses(spec)
    except PolicyError as e:
        raise ValueError(
            f"version spec {spec!r}: {e}; use '*', a version such as 1.2.0, or clauses "
            "such as '>=1.0.0,<2.0.0'"
        ) from e
    return spec


def matches(version: str | None, spec: str) -> bool:
    """Whether an installed ``version`` satisfies ``spec`` (no version never does)."""
    if version is None:
        return False
    if spec.strip() == ANY:
        return True
    try:
        installed = parse_version(version)
    except PolicyError:
        return False  # a device reporting a non-semver version matches no range
    return all(_holds(installed, op, wanted) for op, wanted in _clauses(spec))


def _holds(installed: semver.Version, op: str, wanted: semver.Version) -> bool:
    order = installed.compare(wanted)
    return {
        "==": order == 0,
        "!=": order != 0,
        ">=": order >= 0,
        "<=": order <= 0,
        ">": order > 0,
        "<": order < 0,
    }[op]
