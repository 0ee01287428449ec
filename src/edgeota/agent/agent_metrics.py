"""The agent's ``/metrics`` in the Prometheus text format, written by hand.

The device side keeps its dependencies few, and a dozen series need no client library.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgeota.agent.journal import ComponentRecord
from edgeota.agent.reporting import AgentStatus
from edgeota.agent.statemachine import State

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MIB = 1024 * 1024


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Mapping[str, str]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items()) + "}"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self, name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        suffix = "_total" if kind == "counter" else ""
        for labels, value in samples:
            self.lines.append(f"{name}{suffix}{_labels(labels)} {value:g}")


@dataclass(frozen=True)
class Memory:
    """The agent process's memory in MiB (its runtimes and containers are apart)."""

    resident_mb: float | None
    peak_mb: float


def render(
    status: AgentStatus,
    components: Mapping[str, ComponentRecord],
    unsent_events: int,
    now_unix_s: float,
    memory: Memory | None = None,
) -> str:
    s = status.snapshot()
    w = _Writer()
    w.family(
        "edgeota_agent_component_state",
        "gauge",
        "1 for the update state each component is in, 0 for the others.",
        (
            ({"component": name, "state": state.value}, float(rec.state is state))
            for name, rec in sorted(components.items())
            for state in State
        ),
    )
    w.family(
        "edgeota_agent_installed_info",
        "gauge",
        "The committed release of each component (always 1).",
        (
            (
                {
                    "component": name,
                    "version": rec.committed.version,
                    "release_id": rec.committed.release_id,
                },
                1.0,
            )
            for name, rec in sorted(components.items())
            if rec.committed is not None
        ),
    )
    w.family(
        "edgeota_agent_updates",
        "counter",
        "Updates that ended since the agent started, by component and outcome.",
        (({"component": c, "outcome": o}, n) for (c, o), n in sorted(s.updates.items())),
    )
    w.family(
        "edgeota_agent_failures",
        "counter",
        "Failure events since the agent started, by component and event.",
        (({"component": c, "reason": e}, n) for (c, e), n in sorted(s.failures.items())),
    )
    w.family(
        "edgeota_agent_checkins",
        "counter",
        "Check-ins since the agent started, by result (changed, unchanged, failed).",
        (({"result": r}, n) for r, n in sorted(s.checkins.items())),
    )
    w.family(
        "edgeota_agent_notices",
        "counter",
        "Notices of a changed desired state that woke the agent, by channel.",
        (({"channel": c}, n) for c, n in sorted(s.notices.items())),
    )
    last = s.last_checkin_unix_s
    w.family(
        "edgeota_agent_last_checkin_age_seconds",
        "gauge",
        "Seconds since the server last answered a check-in (absent before the first).",
        [] if last is None else [({}, max(0.0, now_unix_s - last))],
    )
    w.family(
        "edgeota_agent_unsent_events",
        "gauge",
        "Events journaled and not yet accepted by the server.",
        [({}, float(unsent_events))],
    )
    if memory is not None:
        w.family(
            "edgeota_agent_resident_memory_bytes",
            "gauge",
            "Resident memory of the agent process now (not its runtimes or containers).",
            [] if memory.resident_mb is None else [({}, memory.resident_mb * MIB)],
        )
        w.family(
            "edgeota_agent_peak_resident_memory_bytes",
            "gauge",
            "Peak resident memory of the agent process since it started.",
            [({}, memory.peak_mb * MIB)],
        )
    return "\n".join(w.lines) + "\n"
