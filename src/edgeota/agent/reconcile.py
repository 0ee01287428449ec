"""The agent: reconcile what the server desires with what is installed, crash-safely.

One pass (:meth:`Agent.run_once`) checks in, then moves each component along the state machine
(:mod:`edgeota.agent.statemachine`): verify the signed release, download into the inactive
slot, switch ``current``, restart the runtime, health-check, then commit (one journal write)
or roll back. Every transition is saved to the journal together with the event reporting it,
and the outbox is sent when the network allows.

After a restart, :meth:`Agent.open` recovers each component from its journaled state:
DOWNLOADING resumes on the next pass, STAGED re-verifies the slot and switches, TRIAL counts an
attempt and checks again (or rolls back past the budget), ROLLING_BACK finishes rolling back.
Any unexpected error during a pass is handled the same way: reload the journal, recover.

The decision to install is made on signed data only (:func:`decide`). Beside it: every event
is written by :mod:`edgeota.agent.recorder`, the runtimes are kept by
:mod:`edgeota.agent.runtimes`, a slot is filled by :mod:`edgeota.agent.staging`.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from edgeota.agent import schedule
from edgeota.agent.api_client import (
    CredentialError,
    DesiredComponent,
    DesiredState,
    DeviceApi,
    build_inventory,
    inventory_digest,
)
from edgeota.agent.config import DEFAULT_POLL_INTERVAL_S, AgentConfig
from edgeota.agent.datalock import lock_data_dir
from edgeota.agent.decision import (
    ALREADY,
    Decision,
    decide,
    signed_needs,
    signed_variant,
)
from edgeota.agent.delta_fetch import DeltaFetcher, DeltaPlan, transfer_report
from edgeota.agent.diskspace import FreeBytes, NotEnoughSpaceError, ensure_free, free_bytes
from edgeota.agent.download import DownloadCancelledError, Fetcher
from edgeota.agent.driver import HealthCheck, RuntimeDriver
from edgeota.agent.journal import ComponentRecord, Identity, Journal, PendingRelease
from edgeota.agent.recorder import REASON_CHARS, Recorder, figures_detail
from edgeota.agent.runtimes import KIND_CONTAINER, KIND_MODEL, NO_ENGINE, Runtimes, runtime_kind
from edgeota.agent.sets import complete_sets, held_for, holders, is_committed, running_now
from edgeota.agent.slots import ComponentSlots, other_slot
from edgeota.agent.staging import stage_release
from edgeota.agent.statemachine import Event, State
from edgeota.errors import (
    EdgeotaError,
    InsufficientSpaceError,
    PolicyError,
    TransportError,
    UntrustedError,
)
from edgeota.needs import Running, install_order
from edgeota.targets import VerifiedTarget, check_component_name

log = logging.getLogger(__name__)


# -- the boundaries, each with a real implementation and a fake in the tests -----------------
class TrustSource(Protocol):
    def refresh(self) -> None: ...
    def get_target(self, path: str) -> VerifiedTarget: ...


class NotEnrolledError(EdgeotaError):
    """The device has no identity and cannot get one."""


def _sigkill(point: str) -> None:
    log.warning("fault plan: SIGKILL at crash point %r", point)
    os.kill(os.getpid(), signal.SIGKILL)


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        api: DeviceApi,
        trust: TrustSource,
        drivers: Callable[[str], RuntimeDriver],
        container_drivers: Callable[[str], RuntimeDriver] | None = None,
        health: HealthCheck,
        fetcher: Fetcher,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        crash: Callable[[str], None] = _sigkill,
        measure_free: FreeBytes = free_bytes,
    ) -> None:
        self.config = config
        self.api = api
        self.trust = trust
        self.health = health
        self.fetcher = fetcher
        self._deltas = DeltaFetcher(fetcher, config.downloads_dir)
        self.runtimes = Runtimes(drivers, container_drivers)
        self._now = now
        self._rng = rng or random.Random()
        self._crash = crash
        self._measure_free = measure_free
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by wake(): a notice cuts the wait short
        self.on_close: list[Callable[[], None]] = []  # stops what build_agent started
        self._lock_fd: int | None = None
        self.recorder = Recorder(Journal(config.journal_path), now)
        self.desired: DesiredState | None = None
        self._server_poll_s: float | None = None
        self._trust_fresh = False
        self._pass_ok = True
        self._resumable: dict[str, set[str]] = {}  # downloads kept for a later resume
        # When a staged release waiting for its window may switch, in the agent's clock: a
        # scheduler may run the next pass then rather than a poll interval later.
        self.wake_at: datetime | None = None
        # The releases other components are about to install (signed version and needs), by
        # component; None until the first pass has looked (held sets wait for it).
        self._plans: dict[str, Running] | None = None

    @property
    def journal(self) -> Journal:
        return self.recorder.journal

    @journal.setter
    def journal(self, journal: Journal) -> None:
        self.recorder.journal = journal

    # -- life cycle --------------------------------------------------------------------
    def open(self) -> None:
        """Lock the data folder, load the journal, recover, start the runtimes."""
        if self._lock_fd is not None:
            return
        self._lock_fd = lock_data_dir(self.config.lock_path, self.config.data_dir)
        self.journal = Journal.load(self.config.journal_path)
        if self.journal.identity is not None:
            ident = self.journal.identity
            self.api.set_identity(ident.device_id, ident.credential)
        self._recover()

    def close(self, *, stop_runtimes: bool = True) -> None:
        """Release the lock and (unless told otherwise) stop the runtimes."""
        self.runtimes.close(stop=stop_runtimes)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None
        for stop_companion in self.on_close:
            stop_companion()

    def stop(self) -> None:
        """Ask run_forever to return soon (safe to call from a signal handler)."""
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Start the next pass now (a notice said the desired state changed); any thread."""
        self._wake.set()

    def run_forever(self, stop: threading.Event | None = None) -> None:
        if stop is not None:
            self._stop = stop
        self.open()
        failures = 0
        try:
            while not self._stop.is_set():
                failures = 0 if self.run_once() else failures + 1
                self._pause(self.until_next_pass(failures))
        finally:
            self.close()

    def _pause(self, delay_s: float) -> None:
        """Wait ``delay_s``, or less if woken or stopped.

        The stop event may be the caller's (run_forever's argument), set without stop(), so
        it is looked at every second too.
        """
        deadline = time.monotonic() + delay_s
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._wake.wait(min(left, 1.0)):
                break
        self._wake.clear()

    def until_next_pass(self, failures: int) -> float:
        """The poll delay, cut short when a staged release's window opens sooner."""
        delay = self.next_delay_s(failures)
        if self.wake_at is not None:
            delay = min(delay, max(0.0, (self.wake_at - self._now()).total_seconds()))
        return delay

    def next_delay_s(self, failures: int) -> float:
        """Seconds to the next pass: the poll interval, or a capped back-off, both jittered."""
        j = self.config.poll_jitter
        if failures == 0:
            base = self.config.poll_interval_s or self._server_poll_s or DEFAULT_POLL_INTERVAL_S
        else:
            base = min(
                self.config.backoff_max_s, self.config.backoff_initial_s * 2 ** (failures - 1)
            )
        # Jitter spreads devices out, so a fleet reconnecting after an outage does not stampede.
        return base * self._rng.uniform(1 - j, 1 + j)

    # -- one pass ----------------------------------------------------------------------
    def run_once(self) -> bool:
        """Check in, reconcile every component, report.

        Returns False when something failed that is worth backing off for: the server, the
        metadata or the download could not be reached.
        """
        self.open()
        reached, self._pass_ok = True, True
        self.wake_at = None
        try:
            self._ensure_enrolled()
            state = self.api.desired_state(self.desired.etag if self.desired else None)
            if state is not None:
                self.desired = state
                self._server_poll_s = state.poll_interval_s
        except TransportError as e:
            log.warning("check-in failed: %s", e)
            reached = False
        except UntrustedError as e:
            log.warning("check-in answer refused: %s", e)
            reached = False
        self._supervise()
        wanted = dict(self.desired.components) if self.desired else {}
        busy = [n for n, r in self.journal.components.items() if r.state is not State.IDLE]
        self._trust_fresh = False
        try:
            self._plans = self._plan(wanted)
        except TransportError as e:
            log.warning("metadata refresh failed: %s", e)
            self._plans, reached = {}, False
        needs = {n: dict(p.needs) for n, p in self._plans.items()}
        for name in install_order(needs, set(wanted) | set(busy)):
            if self._stop.is_set():
                break
            try:
                self._reconcile(name, wanted.get(name))
            except TransportError as e:
                log.warning("%s: %s", name, e)
                reached = False
            except Exception:
                # Handled like a crash: the journal on disk is the truth; recover from it.
                log.exception("%s: unexpected error; recovering from the journal", name)
                self.journal = Journal.load(self.config.journal_path)
                self._recover()
                reached = False
        self._settle_holds()
        self._sweep_downloads()
        try:
            self._flush_outbox()
            self._send_inventory()
        except TransportError as e:
            log.warning("report failed (kept for later): %s", e)
            reached = False
        return reached and self._pass_ok

    def _ensure_enrolled(self) -> None:
        if self.journal.identity is not None:
            return
        token = self.config.enroll_token
        if not token:
            raise NotEnrolledError(
                f"no device identity in {self.config.data_dir} and no enrollment token: "
                "start the agent once with an enrollment token from the operator"
            )
        try:
            device_id, credential = self.api.enroll(
                token, self.config.device_name, self.config.hardware_class
            )
        except CredentialError as e:
            raise NotEnrolledError(f"enrollment failed: {e}") from e
        self.journal.save_identity(Identity(device_id, credential))
        self.api.set_identity(device_id, credential)

    def _reconcile(self, name: str, desired: DesiredComponent | None) -> None:
        try:
            check_component_name(name)
        except PolicyError as e:
            if desired is not None:
                self.recorder.tell_refusal(name[:64], desired, str(e), record=False)
            return
        rec = self.journal.components.get(name)
        if rec is not None and rec.state is State.DOWNLOADING:
            assert rec.pending is not None
            if desired is None or desired.release_id == rec.pending.release_id:
                self._resume_download(name)
                return
            self._download_failed(name, f"superseded by release {desired.release_id}", keep=False)
        elif rec is not None and rec.state is State.STAGED:
            assert rec.pending is not None
            if desired is None or desired.release_id == rec.pending.release_id:
                self._switch(name)  # once its window opens (edgeota.agent.schedule)
                return
            self._abandon_staged(name, f"superseded by release {desired.release_id}")
        elif rec is not None and rec.state is not State.IDLE:
            return  # only reached if recovery could not finish; it retries on the next start
        if desired is None:
            return
        if rec is not None and is_committed(rec, desired):
            # The steady state: nothing to look up; a re-deploy is told once (row 20).
            self.recorder.tell_refusal(name, desired, ALREADY, event="already_installed")
            return
        if desired.status is not None:
            # The server found no model variant this device can run (or still waits for its
            # inventory): nothing to install and nothing wrong; say so once, keep serving.
            reason = desired.reason or desired.status
            self.recorder.tell_refusal(name, desired, reason, event=desired.status[:64])
            return
        if rec is not None and desired.release_id in rec.failed_release_ids:
            # Not a refusal (a rollout would count the device failed instead of rolled back):
            # the rollback was reported; an agent restarted since says it once more.
            why = _failed_before(desired.release_id)
            self.recorder.tell_refusal(name, desired, why, event="already_failed")
            return
        try:
            targets = self._signed_targets(desired.targets)
        except UntrustedError as e:
            self.recorder.tell_refusal(name, desired, str(e))
            return
        record = rec or ComponentRecord()
        decision = self._decide(name, desired, targets, record)
        if decision.action == "install":
            self._start_update(name, desired, targets)
        elif decision.action == "already_installed":
            self.recorder.tell_refusal(
                name, desired, decision.reason or "", event="already_installed"
            )
        elif decision.action == "wait":
            self.recorder.tell_refusal(
                name, desired, decision.reason or "", event="waiting_for_need"
            )
        else:
            self.recorder.tell_refusal(name, desired, decision.reason or "refused")
            self._abort_sets(name, f"{name} {desired.version} was refused: {decision.reason}")

    def _decide(
        self,
        name: str,
        desired: DesiredComponent,
        targets: Sequence[VerifiedTarget],
        record: ComponentRecord,
    ) -> Decision:
        if not self.runtimes.runs_containers and any(t.custom.role == "container" for t in targets):
            return Decision("refuse", NO_ENGINE)
        others = {n: r for n, r in running_now(self.journal.components).items() if n != name}
        plans = {n: p for n, p in (self._plans or {}).items() if n != name}
        return decide(name, desired, targets, record, self.config.hardware_class, others, plans)

    def _plan(self, wanted: Mapping[str, DesiredComponent]) -> dict[str, Running]:
        """The signed version and needs of each release a component is about to install."""
        plans = {}
        for name, desired in sorted(wanted.items()):
            rec = self.journal.components.get(name)
            try:
                check_component_name(name)
            except PolicyError:
                continue
            if desired.status is not None or not desired.targets:
                continue
            if rec is not None and (
                is_committed(rec, desired) or desired.release_id in rec.failed_release_ids
            ):
                continue
            if rec is not None and rec.pending and rec.pending.release_id == desired.release_id:
                plans[name] = Running(rec.pending.version, rec.pending.needs)
                continue
            try:
                targets = self._signed_targets(desired.targets)
            except UntrustedError:
                continue  # refused, and reported, when the component's turn comes
            plans[name] = Running(desired.version, signed_needs(targets))
        return plans

    def _signed_targets(self, paths: Sequence[str]) -> list[VerifiedTarget]:
        if not self._trust_fresh:
            self.trust.refresh()
            self._trust_fresh = True
        return [self.trust.get_target(p) for p in paths]

    # -- the update, one state at a time -----------------------------------------------
    def _start_update(
        self, name: str, desired: DesiredComponent, targets: Sequence[VerifiedTarget]
    ) -> None:
        rec = self.journal.component(name)
        pending = PendingRelease(
            version=desired.version,
            release_id=desired.release_id,
            targets=[t.path for t in targets],
            slot=other_slot(rec.committed_slot),
            sha256s=[t.sha256 for t in targets],
            variant=signed_variant(targets),
            needs=signed_needs(targets),
        )

        def begin(r: ComponentRecord) -> None:
            r.pending, r.last_error, r.trial_attempts = pending, None, 0

        self.recorder.transition(name, Event.UPDATE_FOUND, before=begin)
        self._crash_point("download")
        self._download(name, targets)

    def _resume_download(self, name: str) -> None:
        rec = self.journal.component(name)
        assert rec.pending is not None
        pending = rec.pending
        desired = DesiredComponent(pending.release_id, pending.version, tuple(pending.targets))
        try:
            targets = self._signed_targets(pending.targets)
        except UntrustedError as e:
            self._download_failed(name, str(e), keep=False)
            return
        # The same signed checks as at the start: metadata may have changed meanwhile.
        decision = self._decide(name, desired, targets, rec)
        if decision.action != "install":
            self._download_failed(name, decision.reason or "refused", keep=False)
            return
        self._download(name, targets)

    def _download(self, name: str, targets: Sequence[VerifiedTarget]) -> None:
        rec = self.journal.component(name)
        assert rec.pending is not None
        pending, slots = rec.pending, self._slots(name)
        try:
            self._forget(name, pending.slot)  # what the slot held before (release n-1)
            slots.prepare(pending.slot)
            ensure_free(
                self.config.downloads_dir,
                sum(self.fetcher.bytes_needed(t) for t in targets),
                reserve_bytes=self.config.disk_reserve_mb * 1024 * 1024,
                what=f"{name} {pending.version}",
                measure=self._measure_free,
            )
            stage_release(
                name,
                pending,
                targets,
                slots=slots,
                committed_slot=rec.committed_slot,
                deltas=self._deltas,
                plan=self._delta_plan(name, pending, rec.committed_slot),
                cancel=self._stop,
                delta_failed=lambda r, d: self.recorder.note(name, "delta_failed", r, detail=d),
                progress=self.journal.save,
            )
        except DownloadCancelledError:
            return  # stopping: the journal still says DOWNLOADING, resumed on the next start
        except InsufficientSpaceError as e:
            detail = {}
            if isinstance(e, NotEnoughSpaceError):
                detail = {"needed_bytes": e.needed_bytes, "free_bytes": e.free_bytes}
            self._download_failed(name, str(e), keep=False, detail=detail)
            return
        except TransportError as e:
            self._download_failed(name, str(e), keep=True)
            return
        except UntrustedError as e:
            self._download_failed(name, str(e), keep=False)
            return
        self.recorder.transition(name, Event.DOWNLOAD_OK)
        self._crash_point("staged")
        self._switch(name)

    def _download_failed(
        self, name: str, reason: str, *, keep: bool, detail: dict[str, Any] | None = None
    ) -> None:
        rec = self.journal.component(name)
        assert rec.pending is not None
        self._empty(name, rec.pending.slot)  # reclaim the space before saying so
        if keep:  # a network failure: the partial files resume on the next try
            self._resumable[name] = set(rec.pending.sha256s)
            self._pass_ok = False  # back off before the next try
        else:
            self._resumable.pop(name, None)
            self._purge(rec.pending.sha256s)

        def note(r: ComponentRecord) -> None:
            r.last_error = reason[:REASON_CHARS]

        detail = {**(detail or {}), "will_retry": keep}
        self.recorder.transition(
            name, Event.DOWNLOAD_FAILED, reason=reason, detail=detail, before=note
        )
        if not keep:  # for good: a set waiting for this release cannot complete
            self._abort_sets(name, reason)

    def _delta_plan(self, name: str, pending: PendingRelease, base_slot: str | None) -> DeltaPlan:
        """The signed patches the check-in offers for the pending release, and our bases."""
        desired = self.desired.components.get(name) if self.desired else None
        if desired is None or desired.release_id != pending.release_id:
            return DeltaPlan()
        return DeltaPlan.build(
            self.trust.get_target,
            desired.deltas,
            component=name,
            version=pending.version,
            release_id=pending.release_id,
            hardware_class=self.config.hardware_class,
            base_dir=None if base_slot is None else self._slots(name).slot_dir(base_slot),
        )

    def _switch(self, name: str) -> None:
        rec = self.journal.component(name)
        assert rec.pending is not None
        if not self._switch_due(name):
            self._restore_committed(name, start=True)  # keep serving while the update waits
            return
        self._slots(name).switch_to(rec.pending.slot)

        def first_attempt(r: ComponentRecord) -> None:
            r.trial_attempts = 1

        self.recorder.transition(name, Event.SWITCHED, before=first_attempt)
        self._crash_point("switched")
        self._trial(name)

    def _switch_due(self, name: str) -> bool:
        """Whether the staged release may switch now: its switch policy, the device's
        maintenance windows, the user's deferrals. Waiting is journaled and reported."""
        rec = self.journal.component(name)
        assert rec.pending is not None
        pending = rec.pending
        wanted = self.desired.components.get(name) if self.desired else None
        desired = None
        if self.desired is not None and wanted and wanted.release_id == pending.release_id:
            desired = (wanted.switch_policy, self.desired.schedule)
        requests = schedule.pending_requests(self.config.data_dir, name)
        result = schedule.review(
            rec.wait,
            pending.release_id,
            desired,
            requests,
            self._now(),
            margin_s=self.config.switch_margin_s,
            no_window_deferral_s=self.config.no_window_deferral_s,
        )
        if result.changed or rec.wait != result.wait:
            rec.wait = result.wait
            for report in result.reports:
                self.recorder.note(
                    name, report.event, report.reason, detail=report.detail, save=False
                )
            self.journal.save()
        schedule.remove_requests(self.config.data_dir, result.consumed)
        wake = result.verdict.wait_until
        if not result.verdict.switch and wake is not None:
            self.wake_at = wake if self.wake_at is None else min(self.wake_at, wake)
        return result.verdict.switch

    def _abandon_staged(self, name: str, reason: str) -> None:
        """Drop a staged release that is no longer desired; current stays on the committed."""
        rec = self.journal.component(name)
        assert rec.pending is not None
        self._restore_committed(name, start=False)
        self._empty(name, rec.pending.slot)
        self._purge(rec.pending.sha256s)
        self.recorder.transition(name, Event.STAGE_INVALID, reason=reason)
        self._restore_committed(name, start=True)

    def _trial(self, name: str) -> None:
        rec = self.journal.component(name)
        assert rec.pending is not None
        slot_dir = self._slots(name).slot_dir(rec.pending.slot)
        figures: dict[str, float] = {}
        note = None
        kind = runtime_kind(slot_dir)
        if kind is not None:
            driver = self.runtimes.driver(name, slot_dir)
            # A container driver checks the new container beside the old one before it
            # retires the old one; a process driver restarts the runtime on the new slot.
            driver.restart(slot_dir)
            self.runtimes.restarted(name)
            if not driver.wait_ready(self.config.ready_timeout_s):
                said = driver.last_output()
                if kind == KIND_CONTAINER and said:
                    why = said  # the container's own check says what failed, with figures
                elif driver.crashed():
                    why = (
                        f"the runtime crash-loops on the new slot ({driver.restart_count} restarts)"
                    )
                else:
                    why = f"the runtime did not answer within {self.config.ready_timeout_s:g} s"
                self._fail_trial(name, f"{why}: {said}" if said and why != said else why, figures)
                return
            self._crash_point("health")
            if kind == KIND_MODEL:
                try:
                    report = self.health(driver.base_url, slot_dir, self.config.health_timeout_s)
                except Exception as e:  # a broken check must roll back, never commit
                    self._fail_trial(name, f"the health check itself failed: {e!r}", figures)
                    return
                figures = dict(report.figures)
                if not report.ok or driver.crashed():
                    why = report.reason or "the runtime crash-loops during the health check"
                    self._fail_trial(name, why, figures)
                    return
                note = report.reason
        else:
            self._crash_point("health")
        if self._hold(name, figures):
            return
        self._commit(name, note, figures)

    def _commit(self, name: str, note: str | None, figures: dict[str, float]) -> None:
        rec = self.journal.component(name)
        assert rec.pending is not None
        slot_dir = self._slots(name).slot_dir(rec.pending.slot)
        sha256s = rec.pending.sha256s
        detail = {**figures_detail(figures), **transfer_report(rec.pending, slot_dir)}
        self.recorder.mark_told(name, rec.pending.release_id, ALREADY)  # committed said it
        self.recorder.transition(name, Event.HEALTH_OK, reason=note, detail=detail)
        self._crash_point("commit")
        self._resumable.pop(name, None)
        self._purge(sha256s)
        if self._plans is not None:
            self._plans.pop(name, None)
        self._settle_holds()

    # -- components updated as one set (edgeota.needs) ---------------------------------
    def _hold(self, name: str, figures: dict[str, float]) -> bool:
        """Keep a release that passed its check on trial while releases that need it are
        still to come; journaled, so a restart keeps holding it."""
        rec = self.journal.component(name)
        assert rec.pending is not None
        # While recovering, before the first pass has looked, the set is judged later.
        holders = list(rec.held_for) if self._plans is None else self._holders(name)
        if not holders:
            return False
        if holders != rec.held_for:
            rec.held_for = holders
            reason = (
                f"passed its health check; committed once {', '.join(holders)} (which need "
                "it) are installed, or rolled back with them"
            )
            self.recorder.note(name, "held_for_set", reason, detail=figures_detail(figures))
        return True

    def _holders(self, name: str) -> list[str]:
        return holders(name, self.journal.components, self._plans or {})

    def _settle_holds(self) -> None:
        """Commit held releases whose set is complete (nothing planned needs them any more)."""
        if self._plans is None:
            return
        for name in complete_sets(self.journal.components, self._plans):
            rec = self.journal.component(name)
            if rec.held_for and rec.state is State.TRIAL:  # not committed by an earlier one
                self._commit(name, f"committed with {', '.join(rec.held_for)}", {})

    def _abort_sets(self, name: str, reason: str) -> None:
        """Roll back the held releases that were waiting for ``name``, which failed."""
        for other in held_for(name, self.journal.components):
            if self.journal.component(other).state is State.TRIAL:  # not gone back already
                self._fail_trial(other, f"rolled back with {name}, which needs it: {reason}", {})

    def _fail_trial(self, name: str, reason: str, figures: dict[str, float]) -> None:
        def mark(r: ComponentRecord) -> None:
            assert r.pending is not None
            r.mark_failed(r.pending.release_id)
            r.last_error = reason[:REASON_CHARS]

        self.recorder.transition(
            name, Event.HEALTH_FAILED, reason=reason, detail=figures_detail(figures), before=mark
        )
        self._rollback(name)
        self._abort_sets(name, reason)

    def _rollback(self, name: str) -> None:
        rec = self.journal.component(name)
        assert rec.pending is not None
        slots = self._slots(name)
        driver = self.runtimes.driver(name, slots.slot_dir(rec.pending.slot))
        detail: dict[str, Any] = {}
        if rec.committed_slot is not None:
            slots.switch_to(rec.committed_slot)
            good = slots.slot_dir(rec.committed_slot)
            if runtime_kind(good) is not None:
                driver = self.runtimes.driver(name, good)
                # A container driver finds the old container still serving when the new one
                # failed beside it, and keeps it; otherwise it starts the old image again.
                driver.restart(good)
                # Both slots failing is defined: stay on the committed slot (the last one that
                # passed), keep supervising it, and say so.
                detail["runtime_ready"] = driver.wait_ready(self.config.ready_timeout_s)
            else:
                driver.stop()
        else:
            driver.stop()  # a failed first install: nothing is installed, nothing serves
            slots.clear_current()
        self._empty(name, rec.pending.slot)
        sha256s = rec.pending.sha256s
        # Rolling back said it all: no "failed here before" refusal on the next pass.
        self.recorder.mark_told(
            name, rec.pending.release_id, _failed_before(rec.pending.release_id)
        )
        self.recorder.transition(name, Event.ROLLBACK_DONE, reason=rec.last_error, detail=detail)
        self._purge(sha256s)

    # -- recovery ----------------------------------------------------------------------
    def _recover(self) -> None:
        for name, rec in list(self.journal.components.items()):
            slots = self._slots(name)
            if rec.state is State.IDLE:
                self._restore_committed(name, start=True)
            elif rec.state is State.DOWNLOADING:
                self.recorder.transition(
                    name, Event.RESUME
                )  # the download resumes in the next pass
                self._restore_committed(name, start=True)
            elif rec.state is State.STAGED:
                assert rec.pending is not None
                if self._slot_holds(slots, rec.pending):
                    self._switch(name)
                else:
                    self._restore_committed(name, start=False)
                    self._empty(name, rec.pending.slot)
                    self._purge(rec.pending.sha256s)
                    reason = "the staged slot no longer verifies; it was discarded"
                    self.recorder.transition(name, Event.STAGE_INVALID, reason=reason)
                    self._restore_committed(name, start=True)
            elif rec.state is State.TRIAL:
                self._recover_trial(name, rec)
            else:
                self.recorder.transition(name, Event.RESUME)
                self._rollback(name)

    def _recover_trial(self, name: str, rec: ComponentRecord) -> None:
        assert rec.pending is not None
        if rec.trial_attempts >= self.config.max_trial_attempts:
            reason = (
                f"the health check was interrupted {rec.trial_attempts} times "
                f"(budget {self.config.max_trial_attempts}); rolling back"
            )

            def mark(r: ComponentRecord) -> None:
                assert r.pending is not None
                r.mark_failed(r.pending.release_id)
                r.last_error = reason

            self.recorder.transition(name, Event.ATTEMPTS_EXHAUSTED, reason=reason, before=mark)
            self._rollback(name)
            return

        if rec.held_for:
            # It passed its check before the restart and waits for its set: check it again,
            # without counting against the budget of interrupted checks.
            self.recorder.transition(name, Event.TRIAL_INTERRUPTED)
            self._slots(name).switch_to(rec.pending.slot)
            self._trial(name)
            return

        def count(r: ComponentRecord) -> None:
            r.trial_attempts += 1

        self.recorder.transition(name, Event.TRIAL_INTERRUPTED, before=count)
        self._slots(name).switch_to(rec.pending.slot)
        self._trial(name)

    def _slot_holds(self, slots: ComponentSlots, pending: PendingRelease) -> bool:
        try:
            info = slots.verify(pending.slot)
        except UntrustedError:
            return False
        return info.release_id == pending.release_id

    def _restore_committed(self, name: str, *, start: bool) -> None:
        """Point current at the committed slot (or nothing) and run it if asked."""
        rec, slots = self.journal.component(name), self._slots(name)
        if rec.committed_slot is None:
            slots.clear_current()
            return
        if slots.active() != rec.committed_slot:
            slots.switch_to(rec.committed_slot)
        good = slots.slot_dir(rec.committed_slot)
        if start and runtime_kind(good) is not None:
            driver = self.runtimes.driver(name, good)
            if driver.slot_dir != good:
                driver.restart(good)

    # -- reports ----------------------------------------------------------------------
    def _flush_outbox(self) -> None:
        self.journal.flush_outbox(self.api.post_events, self.recorder.timestamp())

    def _send_inventory(self) -> None:
        body = build_inventory(
            hardware_class=self.config.hardware_class,
            model_ram_budget_mb=self.config.model_ram_budget_mb,
            agent_version=self.config.agent_version,
            disk_free_bytes=self._measure_free(self.config.data_dir),
            components=self.journal.components,
            accelerators=self.config.accelerators,
            timezone=self.config.timezone,
        )
        digest = inventory_digest(body)
        if digest != self.journal.inventory_digest:
            self.api.put_inventory(body)
            self.journal.inventory_digest = digest
            self.journal.save()

    # -- plumbing ----------------------------------------------------------------------
    def _supervise(self) -> None:
        for name in self.runtimes.supervise():
            committed = self.journal.component(name).committed
            why = "the runtime of the committed slot keeps exiting"
            self.recorder.note(name, "runtime_crash_loop", why, about=committed)

    def _sweep_downloads(self) -> None:
        if all(r.state is State.IDLE for r in self.journal.components.values()):
            keep = set().union(*self._resumable.values()) if self._resumable else set()
            self.fetcher.purge(keep)

    def _purge(self, sha256s: Collection[str]) -> None:
        keep = set().union(*self._resumable.values()) if self._resumable else set()
        self.fetcher.remove(set(sha256s) - keep)

    def _empty(self, name: str, slot: str) -> None:
        """Empty an inactive slot, and free what its runtime kept for it."""
        self._forget(name, slot)
        self._slots(name).empty(slot)

    def _forget(self, name: str, slot: str) -> None:
        self.runtimes.forget(name, self._slots(name).slot_dir(slot))

    def _slots(self, name: str) -> ComponentSlots:
        return ComponentSlots(self.config.data_dir, name)

    def _crash_point(self, point: str) -> None:
        if self.config.crash_at == point:
            self._crash(point)


def _failed_before(release_id: str) -> str:
    return f"{release_id} failed here before"
