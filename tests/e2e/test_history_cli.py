"""The operator's history commands against a real server: events, audit, logs, feedback."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from edgeota.cli.main import app
from seeding import Seeded


def _run(seeded: Seeded, *args: str) -> str:
    server = seeded.server
    result = CliRunner().invoke(
        app,
        [*args, "--server", server.url, "--token", seeded.token, "--ca", str(server.ca)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_history_is_searchable_from_the_command_line(seeded: Seeded, tmp_path: Path) -> None:
    canary = seeded.devices[0].id
    found = _run(
        seeded, "events", "search", "--release", "denoiser@2.0.0", "--event", "rolled_back"
    )
    assert canary in found and "max_abs_error 0.71" in found
    assert "update_found" not in found
    assert "committed" in _run(seeded, "events", "search", "--device", canary, "--q", "")

    audit = _run(seeded, "audit", "--action", "rollout.")
    assert "rollout.halted" in audit and "rollout-loop" in audit
    assert "rollout.create" in audit and "admin:first" in audit
    assert "release.publish" not in audit

    logs = _run(seeded, "logs", "search", "--q", "ROLLING BACK")
    assert canary in logs and "rolled_back" in logs
    assert "probe: max_abs_error 0.71 above 0.25" in _run(seeded, "logs", "show", "1")

    feedback = _run(seeded, "feedback", "show", "denoiser@2.0.0")
    assert "1 rating, average 1.0, 100% negative" in feedback
    assert "choppy output after the update" in feedback

    written = _run(seeded, "mqtt", "auth-files", "--out-dir", str(tmp_path / "broker"))
    assert "4 devices" in written
    passwd = (tmp_path / "broker" / "passwd").read_text().splitlines()
    assert sorted(line.split(":")[0] for line in passwd) == sorted(d.id for d in seeded.devices)
    assert (tmp_path / "broker" / "passwd").stat().st_mode & 0o077 == 0
