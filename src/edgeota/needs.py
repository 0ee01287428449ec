"""What a release needs of other components, and whether a set of versions meets it.

A release may declare ``needs`` such as ``{"model": ">=1.3.0"}``: another component of the
same device must run a version that matches. A spec is an :mod:`edgeota.versionspec`: one or
more comparisons joined by commas, all of which must hold: ``>=1.3.0``, ``>=1.3.0,<2.0.0``,
``1.2.0``, ``!=1.4.0``, or ``*`` for any installed version.

The server refuses a deployment or rollout that would leave a device with a need unmet; the
agent installs the components of a device in an order that keeps every need met
(:func:`install_order`). Both use these pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgeota.errors import PolicyError
from edgeota.versionspec import matches


def need_met(have: str | None, spec: str) -> bool:
    """Whether version ``have`` (None: not installed) meets ``spec``; bad specs never do."""
    try:
        return matches(have, spec)
    except (ValueError, PolicyError):
        return False


@dataclass(frozen=True)
class Unmet:
    """One need not met: ``owner`` (at ``owner_version``) needs ``component`` ``spec``."""

    owner: str
    owner_version: str
    component: str
    spec: str
    have: str | None

    def __str__(self) -> str:
        has = f"{self.component} {self.have}" if self.have else f"no {self.component}"
        return f"{self.owner} {self.owner_version} needs {self.component} {self.spec}, found {has}"


@dataclass(frozen=True)
class Running:
    """A component's version and its release's needs, on one device."""

    version: str
    needs: Mapping[str, str]


def unmet_needs(running: Mapping[str, Running]) -> list[Unmet]:
    """Every need of every component in ``running`` that the others do not meet."""
    out = []
    for owner, r in sorted(running.items()):
        for component, spec in sorted(r.needs.items()):
            have = running[component].version if component in running else None
            if not need_met(have, spec):
                out.append(Unmet(owner, r.version, component, spec, have))
    return out


def install_order(needs: Mapping[str, Mapping[str, str]], names: Iterable[str]) -> list[str]:
    """``names`` ordered so that a component comes after the components it needs.

    Ties (and cycles, which the per-component checks then refuse) keep alphabetical order.
    """
    remaining = sorted(set(names))
    done: list[str] = []
    while remaining:
        ready = [
            n
            for n in remaining
            if not any(dep in remaining and dep != n for dep in needs.get(n, {}))
        ]
        pick = ready[0] if ready else remaining[0]
        done.append(pick)
        remaining.remove(pick)
    return done
