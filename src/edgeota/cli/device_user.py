"""``edgeota agent updates`` and ``edgeota agent feedback``: the device user's side.

Both talk to the running agent's local API on this device (``edgeota.agent.localapi``).
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from edgeota.cli.common import fail, out

DEFAULT_AGENT_API = "http://127.0.0.1:8500"
AgentApiOpt = Annotated[
    str,
    typer.Option(
        "--agent-api", envvar="EDGEOTA_AGENT_API", help="the agent's local API on this device"
    ),
]


def _call(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    try:
        response = httpx.request(method, url, json=body, timeout=10.0)
    except httpx.HTTPError as e:
        fail(f"cannot reach the agent at {url}: {e}", "is the agent running on this device?")
    try:
        data = response.json()
    except ValueError:
        fail(f"{url} answered {response.status_code} without JSON")
    if response.status_code >= 400:
        fail(str(data.get("error", data)))
    return data if isinstance(data, dict) else {}


def updates(agent_api: AgentApiOpt = DEFAULT_AGENT_API) -> None:
    """What updates are coming to this device: when, how big, how long it is down."""
    found = _call("GET", f"{agent_api.rstrip('/')}/v1/updates")["updates"]
    if not found:
        out.print("no update is coming: this device runs what it should")
        return
    table = Table("component", "now", "next", "size", "when", "downtime", "deferrals")
    for u in found:
        size = f"{u['size_bytes'] / 1024**2:.1f} MiB" if u["size_bytes"] else "?"
        deferrals = f"{u['deferrals_used']}/{u['max_deferrals']}"
        if u["can_defer"]:
            deferrals += " (can defer)"
        table.add_row(
            u["component"],
            u["installed_version"] or "none",
            u["version"],
            size,
            f"{u['switch_at'] or 'when ready'}: {u['why']}",
            f"~{u['expected_downtime_s']:.0f} s",
            deferrals,
        )
    out.print(table)


def feedback(
    rating: Annotated[int, typer.Option(min=1, max=5, help="1 (bad) to 5 (good)")],
    comment: Annotated[str, typer.Option(help="a few words (at most 1000 characters)")] = "",
    component: Annotated[
        str | None, typer.Option(help="about the installed release of this component")
    ] = None,
    release: Annotated[str | None, typer.Option(help="about this release ID")] = None,
    agent_api: AgentApiOpt = DEFAULT_AGENT_API,
) -> None:
    """Tell the operators how an update went: a rating and a comment, nothing else."""
    if (component is None) == (release is None):
        fail("give --component or --release: the feedback is about one release")
    body: dict[str, Any] = {"rating": rating, "comment": comment}
    body.update({"component": component} if component else {"release_id": release})
    result = _call("POST", f"{agent_api.rstrip('/')}/v1/feedback", body)
    out.print(f"thank you: feedback on {result['release_id']} is on its way")
