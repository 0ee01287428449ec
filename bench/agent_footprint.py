#!/usr/bin/env python3
"""The agent's own footprint on a device while it takes a large update.

One server on loopback (HTTPS with generated certificates, SQLite), one release: the example
ONNX model with its probe set plus a data file of ``--mib`` MiB of random bytes (role
``file``), deployed to the device's group. One ``edgeota agent`` process enrolls, downloads
(streaming, hashing as it goes), verifies, stages, switches, health-checks and commits it.

Printed, for the agent process alone (its runtime service is a separate process, counted
apart): peak resident memory (``VmHWM``) through the update, resident memory once idle
again, and the time from the agent's start to the commit; and the download rate from its
own events (``update_found`` to ``download_ok``). Baselines in the same script:

- ``curl`` fetching the same signed target from the same server (peak RSS and rate): the
  memory and speed of a plain HTTPS download, nothing verified, nothing staged;
- a bare Python interpreter that imports the agent (peak RSS): what the agent costs before
  it does anything.

Run: .venv/bin/python bench/agent_footprint.py [--mib 1024] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchkit import https_server

from edgeota.modelops.digits import build_example_releases
from edgeota.procs import ProcessGroup, free_port, wait_until
from edgeota.releasefolder import load_release
from edgeota.runtime import resources

GROUP = "bench"
COMPONENT = "denoiser"
CHUNK = 4 * 1024 * 1024


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` figure in KiB (VmHWM: peak resident, VmRSS: resident now)."""
    kib = resources.status_kib(field, pid)
    if kib is None:
        raise RuntimeError(f"no {field} for process {pid}")
    return kib


def child_peak_kib(argv: list[str]) -> tuple[int, float]:
    """Run ``argv``; its peak RSS in KiB and its wall time.

    VmHWM read until the process exits (it only grows, so the last reading is the peak of
    all but the last few milliseconds). Not wait4's ru_maxrss: that counts the memory of
    this large process the child was forked from before it ran ``argv``.
    """
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        with contextlib.suppress(OSError, RuntimeError):  # it may exit between two reads
            peak = max(peak, status_kib(proc.pid, "VmHWM"))
        time.sleep(0.002)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with {proc.returncode}")
    return peak, time.monotonic() - started


def release_folder(work: Path, mib: int) -> Path:
    """The example model v1 plus ``mib`` MiB of random data, as a release folder."""
    example = build_example_releases(work / "models").v1.path
    folder = work / "release"
    shutil.copytree(example, folder)
    with (folder / "data.bin").open("wb") as f:
        for _ in range(mib * 1024 * 1024 // CHUNK):
            f.write(os.urandom(CHUNK))
    spec = json.loads((folder / "release.json").read_text())
    spec["files"].append({"path": "data.bin", "role": "file"})
    (folder / "release.json").write_text(json.dumps(spec, indent=2))
    return folder


def event_time(events: list[dict[str, Any]], name: str) -> datetime:
    for e in events:
        if e["event"] == name:
            return datetime.fromisoformat(e["time"])
    raise RuntimeError(f"the device reported no {name} event")


def run(work: Path, mib: int) -> dict[str, float]:
    folder = release_folder(work, mib)
    with ProcessGroup() as procs, https_server(procs, work) as server:
        admin = server.admin
        release = admin.publish(load_release(folder), COMPONENT, "1.0.0")
        admin.deploy(release["id"], GROUP)
        data = next(f for f in release["files"] if f["file"] == "data.bin")

        started = time.monotonic()
        agent = procs.start(
            server.agent_argv(work / "device", "bench-device", free_port(), [GROUP]),
            work / "agent.log",
        )

        def events() -> list[dict[str, Any]]:
            return [e for d in admin.devices(GROUP) for e in admin.events(str(d["id"]))]

        wait_until(
            lambda: any(e["event"] == "committed" for e in events()), 1800, 0.2, "the commit"
        )
        took = time.monotonic() - started
        peak_kib = status_kib(agent.pid, "VmHWM")
        idle_kib = status_kib(agent.pid, "VmRSS")
        seen = events()
        found, downloaded = event_time(seen, "update_found"), event_time(seen, "download_ok")
        download_s = (downloaded - found).total_seconds()

        target = f"{server.url}/tuf/targets/{COMPONENT}/1.0.0/{data['sha256']}.data.bin"
        curl_kib, curl_s = child_peak_kib(
            ["curl", "-sSf", "--cacert", str(server.certs.ca_cert), "-o", "/dev/null", target]
        )
    import_kib, _ = child_peak_kib([sys.executable, "-c", "import edgeota.agent.wiring"])
    size_mb = data["length"] / 1e6
    return {
        "mib": mib,
        "agent_peak_mib": peak_kib / 1024,
        "agent_idle_mib": idle_kib / 1024,
        "agent_seconds_to_commit": took,
        "agent_download_mb_s": size_mb / download_s if download_s > 0 else float("inf"),
        "curl_peak_mib": curl_kib / 1024,
        "curl_mb_s": size_mb / curl_s,
        "import_peak_mib": import_kib / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="size of the data file, MiB")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeota-agent-bench-"))
    try:
        r = run(work, args.mib)
    finally:
        if args.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    rows = [
        ("agent, peak through the update", f"{r['agent_peak_mib']:.1f} MiB", ""),
        ("agent, idle after the commit", f"{r['agent_idle_mib']:.1f} MiB", ""),
        (
            "baseline: python importing the agent",
            f"{r['import_peak_mib']:.1f} MiB",
            f"agent peak {r['agent_peak_mib'] / r['import_peak_mib']:.2f}x",
        ),
        (
            "baseline: curl, same target",
            f"{r['curl_peak_mib']:.1f} MiB",
            f"agent peak {r['agent_peak_mib'] / r['curl_peak_mib']:.1f}x",
        ),
        ("agent download + hash rate", f"{r['agent_download_mb_s']:.0f} MB/s", ""),
        (
            "baseline: curl download rate",
            f"{r['curl_mb_s']:.0f} MB/s",
            f"agent {r['agent_download_mb_s'] / r['curl_mb_s']:.2f}x",
        ),
        ("agent start to commit", f"{r['agent_seconds_to_commit']:.1f} s", ""),
    ]
    print(f"update: the example model + {args.mib} MiB data file, HTTPS on loopback")
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
