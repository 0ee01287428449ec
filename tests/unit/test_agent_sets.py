"""Which passed release waits for which: the pure rules of sets (edgeota.agent.sets)."""

from __future__ import annotations

from edgeota.agent.journal import ComponentRecord, PendingRelease, ReleaseRef
from edgeota.agent.sets import complete_sets, held_by, held_for, running_now
from edgeota.agent.statemachine import State
from edgeota.needs import Running


def on_trial(version: str, held: list[str] | None = None) -> ComponentRecord:
    pending = PendingRelease(version, f"rel-{version}", [], "b")
    rec = ComponentRecord(state=State.TRIAL, committed_slot="a", pending=pending)
    rec.committed = ReleaseRef("1.0.0", "rel-1.0.0")
    rec.held_for = held or []
    return rec


def test_a_planned_release_that_needs_the_new_version_holds_it() -> None:
    plans = {"app": Running("2.1.0", {"model": ">=1.3.0"})}
    assert held_by("model", "1.3.0", {}, plans) == ["app"]
    assert held_by("model", "1.2.0", {}, plans) == []  # does not meet it: not its set


def test_an_installed_need_the_new_version_breaks_holds_it_for_the_fix() -> None:
    installed = {"app": Running("2.0.0", {"model": "<2.0.0"})}
    fixed = {"app": Running("2.1.0", {})}
    assert held_by("model", "2.0.0", installed, fixed) == ["app"]
    assert held_by("model", "2.0.0", installed, {}) == []  # nothing planned to go with


def test_a_held_release_counts_as_running_and_completes_when_nothing_needs_it() -> None:
    records = {"model": on_trial("1.3.0", ["app"])}
    assert running_now(records)["model"].version == "1.3.0"
    plans = {"app": Running("2.1.0", {"model": ">=1.3.0"})}
    assert complete_sets(records, plans) == []
    assert complete_sets(records, {}) == ["model"]
    assert held_for("app", records) == ["model"]
    assert held_for("config", records) == []
