"""`edgeota demo` as a person runs it: the outcome it promises, and nothing left behind.

Where podman works (always in CI), the demo runs with ``--containers on`` and the tests check
its app container part too, and that no container or image of the run is left; elsewhere
the model part runs alone (``--containers off``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgeota.agent.engine import CliEngine
from edgeota.demo_app import app_container_names, podman_engine, podman_problem
from edgeota.procs import wait_until
from podman_images import podman
from support import REQUIRE_ALL

PREFIX_SAID = re.compile(r"\((edgeota-demo-[0-9a-f]+-)\*\)")  # "building the app images ..."


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


def containers_mode(tmp_path: Path) -> tuple[str, CliEngine]:
    """``on`` where podman works; ``off`` on a developer machine without it; a failure in
    CI, where the demo must show its container app."""
    engine = podman_engine(tmp_path / "podman")
    problem = podman_problem(engine)
    if problem is None:
        return "on", engine
    if REQUIRE_ALL:
        pytest.fail(f"{problem} (EDGEOTA_REQUIRE_ALL_TESTS=1: the demo must show its app)")
    return "off", engine


def left_behind(engine: CliEngine, prefix: str) -> list[str]:
    """The run's containers and images still in podman's storage."""
    images = podman(engine, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    mine = [i for i in images if i.startswith(f"localhost/{prefix}")]
    return app_container_names(engine, prefix) + mine


@pytest.mark.timeout(600)  # the whole demo, on a shared machine
def test_demo_updates_then_rolls_back_and_reports_json(tmp_path: Path) -> None:
    mode, engine = containers_mode(tmp_path)
    work = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeota",
            "demo",
            "--json",
            "--work-dir",
            str(work),
            "--containers",
            mode,
        ],
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
    assert report["containers"] is (mode == "on")
    if mode == "off":
        return
    # Device 1 took app 2.0.0 with the busybox base layer it had, refused 3.0.0, and
    # serves 2.0.0; then the demo removed the run's containers and images.
    assert report["app_final_version"] == "2.0.0"
    assert report["app_serving"] == "2"
    assert report["app_rolled_back"] is True
    assert 0 < report["app_bytes_sent"] * 20 < report["app_bytes_full"]
    assert left_behind(engine, report["container_prefix"]) == []


@pytest.mark.timeout(600)
def test_demo_interrupted_with_ctrl_c_leaves_no_process(tmp_path: Path) -> None:
    mode, engine = containers_mode(tmp_path)
    work = tmp_path / "demo"
    log = tmp_path / "demo.out"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgeota",
                "demo",
                "--work-dir",
                str(work),
                "--containers",
                mode,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    prefix = None

    def running() -> bool:
        """Interrupt once the agents and their runtimes run, and the app container."""
        nonlocal prefix
        if demo.poll() is not None or len(processes_mentioning(f"{work}/devices")) < 3:
            return demo.poll() is not None
        if mode == "off":
            return True
        said = PREFIX_SAID.search(log.read_text())
        prefix = said.group(1) if said else None
        return prefix is not None and bool(app_container_names(engine, prefix))

    try:
        wait_until(running, 300, interval_s=0.5, what="demo agents (and app container) running")
        assert demo.poll() is None, log.read_text()[-3000:]
        os.killpg(demo.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
        assert demo.wait(timeout=120) != 0
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    wait_until(lambda: processes_mentioning(str(work)) == [], 30, what="all demo processes gone")
    if prefix is not None:
        assert left_behind(engine, prefix) == []
