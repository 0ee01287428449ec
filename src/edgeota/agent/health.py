"""The device-side health check of a newly started runtime.

After a switch the agent restarts the runtime on the new slot and asks it two things:

1. ``GET /healthz`` must answer ok *and* name the slot's release ID, so an old runtime that is
   still holding the port cannot pass for the new one;
2. the release's probe set (role ``probe``) is sent to ``POST /v1/infer`` and the outputs are
   compared with the references under the release's signed tolerance
   (``edgeota.runtime.probe.compare_outputs``: NaN or Inf always fails; an LLM's top-1 next
   tokens are held to ``min_agreement``, the share that must equal the references);
3. where the tolerance sets them, the inference latency and the runtime's peak RSS that
   ``/v1/infer`` reports must stay within ``max_latency_ms`` and ``max_peak_rss_mb``.

A failure names every check that failed, with the figures (e.g. "max abs error 0.31 exceeds
the tolerance 0.0811; peak RSS 812.0 MB exceeds the budget 196 MB").

A release without a probe set passes on step 1 alone, and the report says so. Every failure,
including network errors and timeouts, comes back as ``ok=False`` with a reason the agent can
report to the server; nothing here raises for a sick runtime.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from edgeota.errors import EdgeotaError, HealthCheckError
from edgeota.fsutil import safe_join
from edgeota.runtime.probe import (
    MAX_LATENCY_MS,
    MAX_PEAK_RSS_MB,
    Array,
    compare_outputs,
    load_probe,
)
from edgeota.slotinfo import SlotInfo

_BODY_EXCERPT_CHARS = 300


@dataclass(frozen=True)
class HealthReport:
    """``reason`` explains a failure; on success it is None, or a note such as "no probe set"."""

    ok: bool
    reason: str | None
    figures: dict[str, float] = field(default_factory=dict)

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise HealthCheckError(self.reason or "health check failed")


class _Failed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Deadline:
    """One time budget shared by every request of a check."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._end = time.monotonic() + timeout_s

    def remaining_s(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise _Failed(f"health check ran out of its {self.timeout_s:g} s budget")
        return left


def _excerpt(response: httpx.Response) -> str:
    text = response.text
    try:
        body = json.loads(text)
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            text = body["error"]
    except ValueError:
        pass
    return text[:_BODY_EXCERPT_CHARS]


def _request(
    client: httpx.Client, method: str, url: str, deadline: _Deadline, **kwargs: Any
) -> tuple[Any, float]:
    """JSON body of a 200 answer and the round-trip time in ms; anything else is a failure."""
    start = time.perf_counter()
    try:
        response = client.request(method, url, timeout=deadline.remaining_s(), **kwargs)
    except httpx.TimeoutException as e:
        raise _Failed(f"{method} {url} timed out: {e!r}") from e
    except httpx.HTTPError as e:
        raise _Failed(f"runtime unreachable: {method} {url} failed: {e!r}") from e
    elapsed_ms = (time.perf_counter() - start) * 1000.0
    if response.status_code != httpx.codes.OK:
        raise _Failed(f"{method} {url} answered {response.status_code}: {_excerpt(response)}")
    try:
        return response.json(), elapsed_ms
    except ValueError as e:
        raise _Failed(f"{method} {url} answered with invalid JSON: {e}") from e


def _check_healthz(
    base_url: str, slot: SlotInfo, client: httpx.Client, deadline: _Deadline
) -> float:
    body, elapsed_ms = _request(client, "GET", f"{base_url}/healthz", deadline)
    if not isinstance(body, dict) or body.get("status") != "ok":
        raise _Failed(f"/healthz does not report status ok: {str(body)[:_BODY_EXCERPT_CHARS]}")
    serving = body.get("release_id")
    if serving != slot.release_id:
        raise _Failed(
            f"the runtime serves release {serving!r}, but the slot holds {slot.release_id!r}: "
            "the runtime was not restarted on the new slot, or another process holds its port"
        )
    return elapsed_ms


def _output_arrays(body: Any, names: list[str]) -> dict[str, Array]:
    outputs = body.get("outputs") if isinstance(body, dict) else None
    if not isinstance(outputs, dict):
        raise _Failed("/v1/infer answered without an 'outputs' object")
    arrays: dict[str, Array] = {}
    for name in names:
        if name not in outputs:
            continue  # compare_outputs names every missing output
        try:
            # The runtime writes non-finite values as null; float conversion makes them NaN.
            arrays[name] = np.asarray(outputs[name], dtype=np.float64)
        except (ValueError, TypeError) as e:
            raise _Failed(f"/v1/infer output {name!r} is not a numeric array: {e}") from e
    return arrays


def _check(
    base_url: str,
    slot_dir: Path,
    client: httpx.Client,
    deadline: _Deadline,
    figures: dict[str, float],
) -> HealthReport:
    try:
        slot = SlotInfo.read(slot_dir)
    except (OSError, EdgeotaError) as e:
        raise _Failed(f"cannot read the slot description in {slot_dir}: {e}") from e
    figures["healthz_ms"] = _check_healthz(base_url, slot, client, deadline)

    entry = slot.file_with_role("probe")
    if entry is None:
        note = f"release {slot.release_id} ships no probe set; only /healthz was checked"
        return HealthReport(True, note, figures)
    try:
        probe = load_probe(safe_join(slot_dir, entry.file))
    except (OSError, EdgeotaError) as e:
        raise _Failed(f"the probe set of release {slot.release_id} is unusable: {e}") from e

    payload = {"inputs": {name: array.tolist() for name, array in probe.inputs.items()}}
    body, roundtrip_ms = _request(client, "POST", f"{base_url}/v1/infer", deadline, json=payload)
    figures["infer_roundtrip_ms"] = roundtrip_ms
    figures["probe_examples"] = float(probe.batch_size)
    outputs = _output_arrays(body, sorted(probe.references))
    for key in ("latency_ms", "peak_rss_mb"):
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            figures[key] = float(value)
    try:
        result = compare_outputs(outputs, probe.references, slot.tolerance)
    except ValueError as e:
        raise _Failed(f"release {slot.release_id} has an unusable tolerance: {e}") from e
    figures.update(result.figures)
    failures = [result.reason] if not result.ok and result.reason else []
    failures += _over_budget(figures, slot.tolerance)
    if failures:
        return HealthReport(False, "; ".join(failures), figures)
    return HealthReport(True, None, figures)


# tolerance key -> (figure the runtime reports, what it is, unit)
_BUDGETS = {
    MAX_LATENCY_MS: ("latency_ms", "latency", "ms"),
    MAX_PEAK_RSS_MB: ("peak_rss_mb", "peak RSS", "MB"),
}


def _over_budget(figures: dict[str, float], tolerance: dict[str, float]) -> list[str]:
    """The runtime budgets the figures break; a budget without its figure breaks too, since
    a runtime that does not say cannot be shown to stay within it."""
    failures = []
    for key, (figure, what, unit) in _BUDGETS.items():
        bound = tolerance.get(key)
        if bound is None:
            continue
        value = figures.get(figure)
        if value is None:
            failures.append(f"the runtime reported no {what}, but the release bounds it")
        elif value > bound:
            failures.append(f"{what} {value:.1f} {unit} exceeds the budget {bound:g} {unit}")
    return failures


def check_runtime_health(
    base_url: str, slot_dir: Path, client: httpx.Client, timeout_s: float
) -> HealthReport:
    """Check that the runtime at ``base_url`` serves the release in ``slot_dir`` correctly.

    ``timeout_s`` bounds the whole check, not each request.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    figures: dict[str, float] = {}
    try:
        return _check(base_url.rstrip("/"), slot_dir, client, _Deadline(timeout_s), figures)
    except _Failed as failure:
        return HealthReport(False, failure.reason, figures)
