"""The runtimes the agent drives: one per component, a model runtime or a container.

A slot says what runs it (:func:`runtime_kind`); :class:`Runtimes` keeps one driver per
component, of the kind its slot needs, and knows which ones started crash-looping since
they were last told about.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from edgeota.agent.driver import RuntimeDriver
from edgeota.errors import EdgeotaError
from edgeota.slotinfo import SlotInfo

KIND_MODEL, KIND_CONTAINER = "model", "container"
NO_ENGINE = (
    "this release runs as a container, and this agent has no container engine: start it "
    "with --container-engine podman (or docker)"
)


class AgentSetupError(EdgeotaError):
    """The configuration cannot make a working agent (say, no trusted root)."""


def runtime_kind(slot_dir: Path) -> str | None:
    """What runs a slot: the model runtime, a container, or nothing (files only)."""
    try:
        info = SlotInfo.read(slot_dir)
    except (FileNotFoundError, EdgeotaError):
        return None
    if info.file_with_role("container") is not None:
        return KIND_CONTAINER
    if info.file_with_role("model") is not None:
        return KIND_MODEL
    return None


class Runtimes:
    """One driver per component, made on first use by the factory of its kind."""

    def __init__(
        self,
        models: Callable[[str], RuntimeDriver],
        containers: Callable[[str], RuntimeDriver] | None,
    ) -> None:
        self._make = {KIND_MODEL: models}
        if containers is not None:
            self._make[KIND_CONTAINER] = containers
        self._drivers: dict[str, RuntimeDriver] = {}
        self._kinds: dict[str, str] = {}
        self._crash_loop_told: set[str] = set()

    @property
    def runs_containers(self) -> bool:
        return KIND_CONTAINER in self._make

    def driver(self, name: str, slot_dir: Path) -> RuntimeDriver:
        """The component's driver, of the kind the slot needs (model or container)."""
        kind = runtime_kind(slot_dir) or self._kinds.get(name, KIND_MODEL)
        if name in self._drivers and self._kinds[name] == kind:
            return self._drivers[name]
        if name in self._drivers:
            self._drivers.pop(name).stop()  # the component changed kind
        make = self._make.get(kind)
        if make is None:
            raise AgentSetupError(NO_ENGINE)
        driver = make(name)
        self._drivers[name], self._kinds[name] = driver, kind
        return driver

    def restarted(self, name: str) -> None:
        """The component's runtime was restarted on a new slot: a crash loop is news again."""
        self._crash_loop_told.discard(name)

    def forget(self, name: str, slot_dir: Path) -> None:
        """Free what a container runtime keeps for a slot about to be emptied."""
        if runtime_kind(slot_dir) == KIND_CONTAINER and self.runs_containers:
            self.driver(name, slot_dir).forget(slot_dir)

    def supervise(self) -> Iterator[str]:
        """Look after every runtime; yields the components that began crash-looping."""
        for name, driver in self._drivers.items():
            driver.supervise()
            if driver.crashed() and name not in self._crash_loop_told:
                self._crash_loop_told.add(name)
                yield name

    def close(self, *, stop: bool) -> None:
        """Drop every driver; with ``stop``, stop the model runtimes first.

        Containers are the device's services: they keep serving while the agent is down,
        and a restarted agent adopts them.
        """
        if stop:
            for name, driver in self._drivers.items():
                if self._kinds.get(name) != KIND_CONTAINER:
                    driver.stop()
        self._drivers.clear()
        self._kinds.clear()
