"""Fill the inactive slot with a release's verified files; its slot info is written last."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from edgeota.agent.delta_fetch import DeltaFetcher, DeltaPlan, record_fetched
from edgeota.agent.journal import PendingRelease
from edgeota.agent.layer_reuse import reusable_files
from edgeota.agent.slots import ComponentSlots
from edgeota.slotinfo import SlotFile, SlotInfo
from edgeota.targets import VerifiedTarget


def stage_release(
    name: str,
    pending: PendingRelease,
    targets: Sequence[VerifiedTarget],
    *,
    slots: ComponentSlots,
    committed_slot: str | None,
    deltas: DeltaFetcher,
    plan: DeltaPlan,
    cancel: threading.Event,
    delta_failed: Callable[[str, dict[str, Any]], None],
    progress: Callable[[], None],
) -> None:
    """Put every target into ``pending.slot``: linked from the committed slot where it holds
    the same signed file (an image's unchanged layers, say), else fetched by delta or whole.

    ``progress`` saves the journal after each file (a restart resumes from there); the slot
    counts as complete only once its slot info is written, last. Raises what the fetch
    raises (DownloadCancelledError, TransportError, UntrustedError).
    """
    base = None if committed_slot is None else slots.slot_dir(committed_slot)
    have = reusable_files(targets, base)
    files = []
    for t in targets:
        if t.custom.file in have:
            slots.install_file(pending.slot, t.custom.file, have[t.custom.file])
            pending.downloaded_bytes.setdefault(t.custom.file, 0)
        else:
            got = deltas.fetch(t, plan, cancel=cancel, report=delta_failed)
            slots.install_file(pending.slot, t.custom.file, got.path)
            record_fetched(pending, t.custom.file, got)
        progress()
        files.append(SlotFile(t.custom.file, t.custom.role, t.sha256, t.length, t.custom.variant))
    probe = next((t for t in targets if t.custom.role == "probe"), None)
    tolerance = (probe.custom.tolerance if probe else None) or {}
    info = SlotInfo(name, pending.version, pending.release_id, tuple(files), tolerance)
    slots.write_info(pending.slot, info)
