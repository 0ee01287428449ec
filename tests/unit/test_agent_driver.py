"""ProcessDriver against a tiny stand-in runtime (real processes on loopback)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgeota.agent.driver import FakeDriver, ProcessDriver
from edgeota.procs import free_port, wait_until

# Behaves like `python -m edgeota.runtime.server`, steered by a file in the slot folder.
RUNTIME = textwrap.dedent(
    """
    import argparse, http.server, os, signal, subprocess, sys, time
    p = argparse.ArgumentParser()
    p.add_argument("--slot-dir"); p.add_argument("--host"); p.add_argument("--port", type=int)
    a = p.parse_args()
    mode = open(os.path.join(a.slot_dir, "mode")).read().strip()
    if mode == "exit":
        print("cannot load model.onnx: not a valid model", file=sys.stderr)
        sys.exit(3)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    open(os.path.join(a.slot_dir, "grandchild.pid"), "w").write(str(child.pid))

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *args):
            pass

    http.server.HTTPServer((a.host, a.port), H).serve_forever()
    """
)


@pytest.fixture
def runtime(tmp_path: Path) -> Path:
    script = tmp_path / "runtime.py"
    script.write_text(RUNTIME)
    return script


def slot(tmp_path: Path, mode: str) -> Path:
    d = tmp_path / f"slot-{mode}"
    d.mkdir(exist_ok=True)
    (d / "mode").write_text(mode)
    return d


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def exited(pid: int, timeout_s: float) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout_s)[0])
    finally:
        os.close(fd)


@pytest.fixture
def drivers() -> Iterator[list[ProcessDriver]]:
    made: list[ProcessDriver] = []
    yield made
    for d in made:
        d.stop()


def make(drivers: list[ProcessDriver], runtime: Path, **kw: object) -> ProcessDriver:
    d = ProcessDriver(free_port(), command=[sys.executable, str(runtime)], **kw)  # type: ignore[arg-type]
    drivers.append(d)
    return d


def test_start_ready_and_stop_the_whole_group(
    tmp_path: Path, runtime: Path, drivers: list[ProcessDriver]
) -> None:
    d = make(drivers, runtime, log_path=tmp_path / "logs" / "rt.log")
    good = slot(tmp_path, "serve")
    d.start(good)
    assert d.wait_ready(20)
    assert d.slot_dir == good and not d.crashed() and d.restart_count == 0
    grandchild = int((good / "grandchild.pid").read_text())
    pid = d.pid
    assert pid is not None
    d.stop()
    assert d.slot_dir is None
    assert not alive(pid)
    # Stopped as a group: what the runtime started goes too (not our child: wait on a pidfd).
    assert exited(grandchild, 10)


def test_exiting_runtime_is_a_crash_loop_after_its_budget(
    tmp_path: Path, runtime: Path, drivers: list[ProcessDriver]
) -> None:
    log = tmp_path / "rt.log"
    log.write_text("output of an earlier start\n")
    d = make(drivers, runtime, restart_budget=2, restart_window_s=60.0, log_path=log)
    d.start(slot(tmp_path, "exit"))
    assert d.wait_ready(20) is False
    assert d.crashed()
    assert d.restart_count == 2
    assert d.last_output() == "cannot load model.onnx: not a valid model"


def test_stubborn_runtime_is_killed_after_the_grace_period(
    tmp_path: Path, runtime: Path, drivers: list[ProcessDriver]
) -> None:
    d = make(drivers, runtime, stop_grace_s=0.3)
    d.start(slot(tmp_path, "stubborn"))
    assert d.wait_ready(20)
    pid = d.pid
    assert pid is not None
    d.stop()
    assert not alive(pid)


def test_a_runtime_left_by_a_killed_agent_is_replaced(
    tmp_path: Path, runtime: Path, drivers: list[ProcessDriver]
) -> None:
    """After kill -9 of the agent its runtime still holds the port: the next start stops it."""
    pid_file = tmp_path / "run" / "rt.pid"
    old = make(drivers, runtime, pid_file=pid_file)
    old.start(slot(tmp_path, "serve"))
    assert old.wait_ready(20)
    stale = old.pid
    assert stale is not None
    new = ProcessDriver(old.port, command=old.command, pid_file=pid_file)
    drivers.append(new)
    new.start(slot(tmp_path, "serve"))
    assert new.wait_ready(20)
    assert new.pid != stale
    assert exited(stale, 10)
    os.waitpid(stale, 0)  # reap it: the stand-in was started by this test process
    assert int(pid_file.read_text()) == new.pid
    with pytest.raises(ProcessLookupError):
        os.kill(stale, signal.SIGTERM)


def test_a_runtime_no_pid_file_names_is_stopped_too(
    tmp_path: Path, runtime: Path, drivers: list[ProcessDriver]
) -> None:
    """An agent killed between starting its runtime and writing the pid file leaves a runtime
    nobody names; the next start finds it by its command line and stops it."""
    d = make(drivers, runtime, pid_file=tmp_path / "run" / "rt.pid")
    serving = slot(tmp_path, "serve")
    (tmp_path / "other").mkdir()
    other_component = slot(tmp_path / "other", "serve")  # the same command, another folder
    orphan, unrelated = (
        subprocess.Popen(
            [*d.command, "--slot-dir", str(folder), "--host", "127.0.0.1", "--port", str(port)],
            start_new_session=True,
        )
        for folder, port in ((serving, d.port), (other_component, free_port()))
    )
    try:
        # The orphan serves on the driver's port, as a killed agent's runtime would.
        wait_until(lambda: _answers(d.port), 20, what="the orphan runtime")
        d.start(serving)
        assert d.wait_ready(20)
        assert orphan.wait(10) is not None
        assert d.pid != orphan.pid
        assert unrelated.poll() is None  # another component's runtime is not ours to stop
    finally:
        for p in (orphan, unrelated):
            p.kill()
            p.wait()


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_fake_driver_reports_per_slot() -> None:
    bad = Path("/slots/b")
    d = FakeDriver(crash_loop=lambda s: s == bad)
    d.start(Path("/slots/a"))
    assert d.wait_ready(1) and not d.crashed()
    d.restart(bad)
    assert not d.wait_ready(1) and d.crashed()
    assert [c[0] for c in d.calls] == ["start", "stop", "start"]
