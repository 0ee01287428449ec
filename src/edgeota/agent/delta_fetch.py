"""Delta downloads: rebuild a file of an update from the committed slot and a signed patch.

For each file target of an update, a signed patch target is used when all of these hold
(:meth:`DeltaPlan.choose`): its role is ``patch``; it is signed for the same component,
version and release; its ``custom.file`` is the file; its ``delta_base`` is the sha256 of the
same file in the committed slot; and it is shorter than the full file. Then
:class:`DeltaFetcher` downloads it with the resumable downloader (capped at and verified
against its signed length and sha256), applies it to the committed slot's file into the
downloads folder, and checks the result against the *full* target's signed length and sha256;
the patch's own header is never the proof. Only then does the result take the name a
verified full download would have (``<downloads>/<sha256>``).

Anything failing on that path (download, apply, verification) is reported once as a
``delta_failed`` event, and the full file is downloaded instead; this agent does not try
that patch again.

The base: the committed slot's ``edgeota-slot.json`` (written only after its files were
verified) names each file's sha256, and a length check confirms the file on disk still has
the recorded size; no extra read. ``apply_patch`` then hashes the whole base before it
decodes anything, so a base changed on disk fails the delta path (and falls back) instead
of producing a wrong file.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeota.agent.download import DownloadCancelledError, Fetcher
from edgeota.agent.journal import PendingRelease
from edgeota.agent.slots import file_sha256
from edgeota.delta import apply_patch
from edgeota.errors import EdgeotaError, VerificationError
from edgeota.fsutil import fsync_dir, safe_join
from edgeota.slotinfo import SlotInfo
from edgeota.targets import VerifiedTarget

log = logging.getLogger(__name__)

Report = Callable[[str, dict[str, Any]], None]  # (reason, detail) of a delta_failed event
Apply = Callable[[Path, Path, Path], None]


@dataclass(frozen=True)
class BaseFile:
    """A file of the committed slot, as its slot description records it."""

    path: Path
    sha256: str
    length: int


def committed_bases(slot_dir: Path | None) -> dict[str, BaseFile]:
    """The files of the committed slot that may serve as delta bases, by file name."""
    if slot_dir is None:
        return {}
    try:
        info = SlotInfo.read(slot_dir)
    except (FileNotFoundError, EdgeotaError):
        return {}
    bases = {}
    for f in info.files:
        try:
            path = safe_join(slot_dir, f.file)
            if path.stat().st_size != f.length:
                continue
        except (OSError, EdgeotaError):
            continue
        bases[f.file] = BaseFile(path, f.sha256, f.length)
    return bases


@dataclass(frozen=True)
class DeltaPlan:
    """The signed patches of one release and the bases this device holds."""

    patches: tuple[VerifiedTarget, ...] = ()
    bases: dict[str, BaseFile] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        get_target: Callable[[str], VerifiedTarget],
        paths: Sequence[str],
        *,
        component: str,
        version: str,
        release_id: str,
        hardware_class: str,
        base_dir: Path | None,
    ) -> DeltaPlan:
        """Look up ``paths`` (the check-in's ``deltas``) in the signed metadata.

        Patches are optional: a path that is not listed or not ours is skipped (and
        logged), never a reason to refuse the update.
        """
        bases = committed_bases(base_dir)
        if not paths or not bases:
            return cls((), bases)
        patches = []
        for path in paths:
            try:
                target = get_target(path)
            except EdgeotaError as e:
                log.info("%s: patch %s skipped: %s", component, path, e)
                continue
            c = target.custom
            if (
                c.role == "patch"
                and c.delta_base is not None
                and (c.component, c.version, c.release_id) == (component, version, release_id)
                and c.fits_hardware(hardware_class)
            ):
                patches.append(target)
            else:
                log.info(
                    "%s: %s is not a patch of release %s; skipped", component, path, release_id
                )
        return cls(tuple(patches), bases)

    def choose(self, target: VerifiedTarget, refused: set[str]) -> VerifiedTarget | None:
        """The smallest usable patch for ``target``, or None (download the full file)."""
        base = self.bases.get(target.custom.file)
        if base is None:
            return None
        usable = [
            p
            for p in self.patches
            if p.custom.file == target.custom.file
            and p.custom.release_id == target.custom.release_id
            and p.custom.delta_base == base.sha256
            and p.length < target.length
            and p.sha256 not in refused
        ]
        return min(usable, key=lambda p: p.length, default=None)


@dataclass(frozen=True)
class Fetched:
    """Where a target's verified bytes are, and what getting them cost."""

    path: Path
    downloaded_bytes: int  # signed lengths of what was downloaded for it (0: cached)
    via_delta: bool


class DeltaFetcher:
    """Gets each target by delta when a plan allows it, else (or on failure) in full."""

    def __init__(self, fetcher: Fetcher, downloads_dir: Path, apply: Apply = apply_patch) -> None:
        self.fetcher = fetcher
        self.dir = downloads_dir
        self._apply = apply
        self._refused: set[str] = set()  # patches that failed here: the full file instead

    def fetch(
        self,
        target: VerifiedTarget,
        plan: DeltaPlan,
        *,
        report: Report,
        cancel: threading.Event | None = None,
    ) -> Fetched:
        final = self.dir / target.sha256
        if final.exists():  # fetched (or rebuilt) before a restart: the downloader re-verifies
            return Fetched(self.fetcher.fetch(target, cancel=cancel), 0, False)
        patch = plan.choose(target, self._refused)
        if patch is None:
            return Fetched(self.fetcher.fetch(target, cancel=cancel), target.length, False)
        base = plan.bases[target.custom.file]
        try:
            path = self._rebuild(target, patch, base, cancel)
        except DownloadCancelledError:
            raise  # stopping: the partial patch is kept for resuming
        except (EdgeotaError, OSError, ValueError) as e:
            self._refused.add(patch.sha256)
            self.fetcher.remove([patch.sha256])
            reason = (
                f"delta for {target.custom.file!r} failed ({type(e).__name__}: {e}); "
                "downloading the full file instead"
            )
            log.warning("%s", reason)
            report(
                reason,
                {
                    "file": target.custom.file,
                    "patch": patch.path,
                    "patch_bytes": patch.length,
                    "full_bytes": target.length,
                },
            )
            full = self.fetcher.fetch(target, cancel=cancel)
            return Fetched(full, patch.length + target.length, False)
        self.fetcher.remove([patch.sha256])
        return Fetched(path, patch.length, True)

    def _rebuild(
        self,
        target: VerifiedTarget,
        patch: VerifiedTarget,
        base: BaseFile,
        cancel: threading.Event | None,
    ) -> Path:
        patch_path = self.fetcher.fetch(patch, cancel=cancel)
        out = self.dir / f"{target.sha256}.delta"
        try:
            self._apply(base.path, patch_path, out)
            size = out.stat().st_size
            if size != target.length or file_sha256(out) != target.sha256:
                raise VerificationError(
                    f"the file rebuilt from {patch.path!r} does not match the signed length "
                    f"and sha256 of {target.path!r}"
                )
            final = self.dir / target.sha256
            out.replace(final)
            fsync_dir(self.dir)
            return final
        finally:
            with contextlib.suppress(FileNotFoundError):
                out.unlink()


def record_fetched(pending: PendingRelease, file: str, fetched: Fetched) -> None:
    """Note in the journaled pending release what getting ``file`` cost."""
    pending.downloaded_bytes.setdefault(file, fetched.downloaded_bytes)
    if fetched.via_delta and file not in pending.delta_files:
        pending.delta_files.append(file)


def transfer_report(pending: PendingRelease, slot_dir: Path) -> dict[str, Any]:
    """``bytes_downloaded``, ``bytes_full`` (full files only) and ``delta_files`` of an update.

    A file with no record (it was fetched by an agent that kept none) counts in full.
    """
    try:
        files = SlotInfo.read(slot_dir).files
    except (FileNotFoundError, EdgeotaError):
        return {}
    return {
        "bytes_downloaded": sum(pending.downloaded_bytes.get(f.file, f.length) for f in files),
        "bytes_full": sum(f.length for f in files),
        "delta_files": len(pending.delta_files),
    }
