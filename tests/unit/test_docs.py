"""Generated documentation stays equal to what it is generated from."""

from __future__ import annotations

from pathlib import Path

from edgeota.agent.statemachine import render_mermaid

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_agent_state_diagram_matches_the_transition_table() -> None:
    text = (DOCS / "agent.md").read_text()
    assert f"```mermaid\n{render_mermaid()}```" in text
