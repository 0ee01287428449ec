"""`edgeota demo` as a person runs it: the outcome it promises, and nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from edgeota.procs import wait_until


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def test_demo_updates_then_rolls_back_and_reports_json(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "edgeota", "demo", "--json", "--work-dir", str(work)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["devices"] == 3
    assert len(report["updated"]) == 3
    assert sorted(report["rolled_back"]) == sorted(report["updated"])
    assert set(report["final_versions"].values()) == {"2.0.0"}
    assert report["seconds"] > 0
    assert 0 < report["bytes_sent"] < report["bytes_full"]  # v1 -> v2 went by delta
    assert "rolled_back" in result.stderr  # the table went to stderr
    assert processes_mentioning(str(work)) == []


def test_demo_interrupted_with_ctrl_c_leaves_no_process(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    log = tmp_path / "demo.out"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "edgeota", "demo", "--work-dir", str(work)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # Interrupt once the agents and their runtimes are running.
        wait_until(
            lambda: len(processes_mentioning(f"{work}/devices")) >= 3 or demo.poll() is not None,
            300,
            what="demo agents started",
        )
        assert demo.poll() is None, log.read_text()[-3000:]
        os.killpg(demo.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
        assert demo.wait(timeout=120) != 0
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    wait_until(lambda: processes_mentioning(str(work)) == [], 30, what="all demo processes gone")
