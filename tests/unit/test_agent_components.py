"""Several components on one device: needs between them, sets installed and rolled back
together, a variant change of an installed release, and releases the agent cannot run."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_agent_reconcile import COMPONENT, Device, install_v1

from edgeota.agent.slots import ComponentSlots
from edgeota.agent.statemachine import State

APP = "app"


@pytest.fixture
def dev(tmp_path: Path) -> Any:
    d = Device(tmp_path)
    yield d
    for a in d.agents:
        a.close()


def committed(dev: Device, name: str) -> tuple[str, str | None] | None:
    rec = dev.journal().components.get(name)
    if rec is None or rec.committed is None:
        return None
    assert rec.state is State.IDLE
    return rec.committed.version, rec.committed.variant


def events(dev: Device, name: str) -> list[str]:
    return [e["event"] for e in dev.api.events if e["component"] == name]


def reasons(dev: Device, name: str, event: str) -> list[str]:
    return [e["reason"] for e in dev.api.events if e["component"] == name and e["event"] == event]


def install_pair(dev: Device, *, app_needs: str = "<2.0.0") -> None:
    """denoiser 1.0.0 and app 1.0.0 (which needs the denoiser ``app_needs``) committed."""
    dev.api.want(
        denoiser=dev.repo.publish("1.0.0"),
        app=dev.repo.publish("1.0.0", component=APP, needs={COMPONENT: app_needs}),
    )
    assert dev.agent().run_once()
    assert committed(dev, COMPONENT) == ("1.0.0", None)
    assert committed(dev, APP) == ("1.0.0", None)


def want_pair(dev: Device, app_needs: str = ">=2.0.0") -> None:
    dev.api.want(
        denoiser=dev.repo.publish("2.0.0"),
        app=dev.repo.publish("2.0.0", component=APP, needs={COMPONENT: app_needs}),
    )


def test_a_needed_component_is_installed_first_in_the_same_pass(dev: Device) -> None:
    """app 2.0.0 needs denoiser >=2.0.0: alphabetical order would try the app first."""
    dev.api.want(
        app=dev.repo.publish("2.0.0", component=APP, needs={COMPONENT: ">=2.0.0"}),
        denoiser=dev.repo.publish("2.0.0"),
    )
    assert dev.agent().run_once()
    assert committed(dev, COMPONENT) == ("2.0.0", None)
    assert committed(dev, APP) == ("2.0.0", None)
    order = [e["component"] for e in dev.api.events if e["event"] == "update_found"]
    assert order == [COMPONENT, APP]
    assert "update_refused" not in dev.api.names()


def test_a_set_is_committed_together_after_the_last_member_passes(dev: Device) -> None:
    install_pair(dev)
    want_pair(dev)
    assert dev.agents[-1].run_once()
    names = [(e["component"], e["event"]) for e in dev.api.events]
    held = names.index((COMPONENT, "held_for_set"))
    # The denoiser passed first, waited on trial for the app, and was committed after it.
    assert held < names.index((APP, "committed")) < len(names)
    assert names.index((APP, "committed")) < max(
        i for i, n in enumerate(names) if n == (COMPONENT, "committed")
    )
    assert committed(dev, COMPONENT) == ("2.0.0", None)
    assert committed(dev, APP) == ("2.0.0", None)


def test_when_one_member_fails_the_whole_set_rolls_back(dev: Device) -> None:
    install_pair(dev)
    want_pair(dev)
    dev.health.bad.add(f"rel-{APP}-2.0.0")
    dev.agents[-1].run_once()
    assert committed(dev, APP) == ("1.0.0", None)
    assert committed(dev, COMPONENT) == ("1.0.0", None)  # rolled back with the app
    (why,) = reasons(dev, COMPONENT, "health_failed")
    assert why.startswith(f"rolled back with {APP}, which needs it")
    assert dev.slots().active() == "a" and dev.running() == dev.slots().slot_dir("a")
    # Neither is retried: a set that failed stays out until newer releases are desired.
    dev.agents[-1].run_once()
    assert events(dev, COMPONENT).count("update_found") == 2


def test_a_held_member_survives_a_restart_and_completes_its_set(dev: Device) -> None:
    install_pair(dev)
    want_pair(dev)
    app_files = [t.url for p, t in dev.repo.targets.items() if p.startswith(f"{APP}/2.0.0/")]
    serve = dev.repo.handle

    def app_offline(request: Any) -> Any:
        if str(request.url) in app_files:
            import httpx

            return httpx.Response(503)
        return serve(request)

    dev.repo.handle = app_offline  # type: ignore[method-assign]
    assert not dev.agents[-1].run_once()  # the app's download fails: retried later
    rec = dev.journal().components[COMPONENT]
    assert rec.state is State.TRIAL and rec.held_for == [APP]
    (failed,) = [e for e in dev.api.events if e["event"] == "download_failed"]
    assert failed["component"] == APP and failed["detail"]["will_retry"] is True
    dev.repo.handle = serve  # type: ignore[method-assign]
    agent = dev.restart()  # kill -9 while held
    assert agent.run_once()
    assert committed(dev, APP) == ("2.0.0", None)
    assert committed(dev, COMPONENT) == ("2.0.0", None)


def test_an_update_that_breaks_an_installed_need_is_refused(dev: Device) -> None:
    install_pair(dev)  # app 1.0.0 needs denoiser <2.0.0
    dev.api.want(
        denoiser=dev.repo.publish("2.0.0"),
        app=dev.repo.publish("1.0.0", component=APP, needs={COMPONENT: "<2.0.0"}),
    )
    dev.agents[-1].run_once()
    (why,) = reasons(dev, COMPONENT, "update_refused")
    assert why == "denoiser 2.0.0 would break app 1.0.0, which needs denoiser <2.0.0"
    assert committed(dev, COMPONENT) == ("1.0.0", None)


def test_a_need_nothing_planned_meets_is_refused(dev: Device) -> None:
    install_v1(dev)
    dev.api.want(
        denoiser=dev.repo.publish("1.0.0"),
        app=dev.repo.publish("1.0.0", component=APP, needs={COMPONENT: ">=3.0.0"}),
    )
    dev.agents[-1].run_once()
    (why,) = reasons(dev, APP, "update_refused")
    assert why == "release needs denoiser >=3.0.0; installed: 1.0.0"
    assert committed(dev, APP) is None


def test_a_changed_variant_choice_installs_the_other_variant(dev: Device) -> None:
    dev.api.want(denoiser=dev.repo.publish("1.0.0", variant="fp32"))
    agent = dev.agent()
    assert agent.run_once()
    assert committed(dev, COMPONENT) == ("1.0.0", "fp32")
    # The device's model RAM budget shrank: the server now chooses int8 of the same release.
    dev.api.want(denoiser=dev.repo.publish("1.0.0", variant="int8"))
    assert agent.run_once()
    assert committed(dev, COMPONENT) == ("1.0.0", "int8")
    assert dev.slots().active() == "b"
    info = ComponentSlots(dev.data, COMPONENT).verify("b")
    assert [f.variant for f in info.files if f.role == "model"] == ["int8"]
    assert agent.run_once()  # steady: nothing more
    assert events(dev, COMPONENT).count("update_found") == 2


def test_a_variant_that_fails_its_check_rolls_back_to_the_committed_one(dev: Device) -> None:
    dev.api.want(denoiser=dev.repo.publish("1.0.0", variant="fp32"))
    agent = dev.agent()
    assert agent.run_once()
    int8 = dev.repo.publish("1.0.0", variant="int8")
    dev.api.want(denoiser=int8)
    dev.health.bad.add(int8.release_id)
    dev.health.checked.clear()
    agent.run_once()
    agent.run_once()
    assert committed(dev, COMPONENT) == ("1.0.0", "fp32")
    assert events(dev, COMPONENT).count("update_found") == 2  # not retried in a loop
    assert dev.running() == dev.slots().slot_dir("a")


def test_a_container_release_without_a_container_engine_is_refused(dev: Device) -> None:
    files = {
        "container.json": ("container", b'{"schema": 1}'),
        "image/manifest.json": ("image", b"[]"),
    }
    dev.api.want(app=dev.repo.publish("1.0.0", component=APP, files=files))
    dev.agent().run_once()
    (why,) = reasons(dev, APP, "update_refused")
    assert "no container engine" in why and "--container-engine" in why
    assert not dev.repo.requests  # nothing downloaded


def test_the_next_pass_comes_when_a_window_opens(dev: Device) -> None:
    agent = install_v1(dev)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    agent._now = lambda: now
    agent.wake_at = now + timedelta(seconds=0.1)  # sooner than the poll interval (0.5 s)
    assert agent.until_next_pass(0) == pytest.approx(0.1)
    agent.wake_at = now + timedelta(hours=2)
    assert 0.0 < agent.until_next_pass(0) < 1.0  # the poll interval (0.5 s, jittered)
    agent.wake_at = now - timedelta(seconds=5)
    assert agent.until_next_pass(0) == 0.0


def test_committed_variant_is_kept_in_the_journal_across_a_restart(dev: Device) -> None:
    dev.api.want(denoiser=dev.repo.publish("1.0.0", variant="fp16"))
    assert dev.agent().run_once()
    agent = dev.restart()
    assert agent.run_once()
    assert committed(dev, COMPONENT) == ("1.0.0", "fp16")
    assert events(dev, COMPONENT).count("update_found") == 1
    assert dataclasses.asdict(dev.journal().components[COMPONENT].committed or object()) == {
        "version": "1.0.0",
        "release_id": f"rel-{COMPONENT}-1.0.0",
        "variant": "fp16",
        "needs": {},
    }
