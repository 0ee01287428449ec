"""Components updated as one set: which passed releases wait for which, on journal data.

A release that passed its health check stays on trial while a planned release of another
component still needs it (:func:`held_by`); it is committed once that one is
(:func:`complete_sets`), and rolled back with it when it fails (:func:`held_for`). Pure
functions of the journal's records and the plan (the signed version and needs of each
release about to be installed); the agent does the switching.
"""

from __future__ import annotations

from collections.abc import Mapping

from edgeota.agent.api_client import DesiredComponent
from edgeota.agent.journal import ComponentRecord
from edgeota.agent.statemachine import State
from edgeota.needs import Running, need_met


def is_committed(rec: ComponentRecord, desired: DesiredComponent) -> bool:
    """Whether ``desired`` is what the component runs (in the variant the server chose)."""
    committed = rec.committed
    if committed is None or committed.release_id != desired.release_id:
        return False
    return desired.variant is None or committed.variant in (None, desired.variant)


def running_now(records: Mapping[str, ComponentRecord]) -> dict[str, Running]:
    """What each component runs: its committed release, or one on trial that passed its
    check and waits for the rest of its set."""
    out = {}
    for name, rec in records.items():
        if is_held(rec) and rec.pending is not None:
            out[name] = Running(rec.pending.version, rec.pending.needs)
        elif rec.committed is not None:
            out[name] = Running(rec.committed.version, rec.committed.needs)
    return out


def is_held(rec: ComponentRecord) -> bool:
    return rec.state is State.TRIAL and bool(rec.held_for)


def holders(
    name: str, records: Mapping[str, ComponentRecord], plans: Mapping[str, Running]
) -> list[str]:
    """The components whose planned releases need ``name``'s release on trial."""
    rec = records[name]
    assert rec.pending is not None
    others = {n: r for n, r in running_now(records).items() if n != name}
    return held_by(name, rec.pending.version, others, plans)


def complete_sets(
    records: Mapping[str, ComponentRecord], plans: Mapping[str, Running]
) -> list[str]:
    """Held components that nothing planned needs any more: to be committed."""
    return [
        name
        for name, rec in sorted(records.items())
        if is_held(rec) and rec.pending is not None and not holders(name, records, plans)
    ]


def held_for(name: str, records: Mapping[str, ComponentRecord]) -> list[str]:
    """The components held on trial for ``name``'s release: they go back when it fails."""
    return [
        other for other, rec in sorted(records.items()) if is_held(rec) and name in rec.held_for
    ]


def held_by(
    component: str,
    version: str,
    installed: Mapping[str, Running],
    planned: Mapping[str, Running],
) -> list[str]:
    """The components whose planned releases need ``component`` at ``version`` (just passed
    its health check) and are not installed yet: the set it must be committed with."""
    out = []
    for other, coming in sorted(planned.items()):
        if other == component:
            continue
        spec = coming.needs.get(component)
        now = installed.get(other)
        breaks_current = (
            now is not None
            and component in now.needs
            and not need_met(version, now.needs[component])
        )
        if (spec is not None and need_met(version, spec)) or (
            breaks_current and need_met(version, coming.needs.get(component, ">=0.0.0"))
        ):
            out.append(other)
    return out
