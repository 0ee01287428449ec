#!/usr/bin/env python3
"""The fleet simulator at 1,000 devices: a broken release and a good one, with the figures.

Runs ``edgeota sim --devices N`` twice, exactly as a user would (its own server on
loopback, real agents with simulated runtimes, 2 % of requests lost, 2 % of devices crashing
mid-update, windows in nine time zones):

- ``--release broken --broken-share 0.3``: the release fails on the class holding 30 % of the
  fleet; the rollout must halt in its field test or first phase and the devices it broke on
  must roll back by themselves;
- ``--release good``: every device must end on the release, each switching inside its window.

For each it prints devices, wall time, simulated hours and how fast simulated time really
ran (it waits for devices' steps on a busy machine), check-ins' p95 latency, requests,
and the bytes the server sent, against the baseline of the same run without the shared
cache in front of the immutable files (what devices received in all), as a ratio.

Run: .venv/bin/python bench/sim.py [--devices 1000] [--time-scale 5000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def run(devices: int, release: str, time_scale: float, seed: int, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgeota-bench-sim-") as tmp:
        report = Path(tmp) / "report.json"
        argv = [
            sys.executable,
            "-m",
            "edgeota",
            "sim",
            "--devices",
            str(devices),
            "--release",
            release,
            "--broken-share",
            "0.3",
            "--seed",
            str(seed),
            "--time-scale",
            str(time_scale),
            "--timeout",
            str(timeout),
            "--report",
            str(report),
            "--json",
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"edgeota sim --release {release} failed ({proc.returncode})")
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        result["_devices"] = json.loads(report.read_text())["devices"]
        return result


def check(result: dict[str, Any], release: str) -> str:
    """What the scenario must show, as one word per check."""
    devices = result["_devices"]
    if release == "broken":
        started = len(result["phases_reached"])
        broke = [d for d in devices if d["received"] and d["hardware_class"] == "arm64-npu"]
        broke = [d for d in broke if d["switched_at"]]
        ok = (
            result["halted"]
            and started <= 2
            and all(d["phase"] < started for d in devices if d["received"])
            and all(d["outcome"] == "rolled_back" and d["final_version"] == "1.0.0" for d in broke)
        )
    else:
        ok = (
            result["final_versions"] == {"2.0.0": result["devices"]}
            and result["switched_outside_window"] == 0
        )
    return "ok" if ok else "NOT AS EXPECTED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--time-scale", type=float, default=5000.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()

    rows = []
    for release in ("broken", "good"):
        print(f"running {args.devices} devices, {release} release ...", flush=True)
        r = run(args.devices, release, args.time_scale, args.seed, args.timeout)
        delivered = r["bytes_sent"] + r["bytes_from_cache"]
        rows.append(
            (
                release,
                r["devices"],
                f"{r['seconds']:.0f} s",
                f"{r['sim_hours']:.0f} h",
                f"{r['effective_time_scale']}x",
                " > ".join(r["phases_reached"]) + (" (halted)" if r["halted"] else ""),
                json.dumps(r["final_versions"]),
                f"{r['rolled_back']}",
                f"{r['checkin_p95_ms']:.0f} ms",
                f"{r['requests']}",
                f"{r['bytes_sent'] / 1e6:.1f} MB",
                f"{delivered / 1e6:.1f} MB",
                f"{r['bytes_sent'] / delivered:.2f}",
                f"{r['crashes']}",
                check(r, release),
            )
        )
    head = (
        "release",
        "devices",
        "wall",
        "simulated",
        "speed",
        "phases",
        "final versions",
        "rolled back",
        "check-in p95",
        "requests",
        "server sent",
        "no-cache baseline",
        "ratio",
        "crashes",
        "checks",
    )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    for line in (head, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)))


if __name__ == "__main__":
    main()
