"""The agent's journal: everything it must remember across a kill -9 or a power cut.

One JSON file, rewritten whole with :func:`edgeota.fsutil.atomic_write_text` (temp file,
fsync, rename, fsync of the folder) after every state change, so a reader always finds the
previous version or the new one. A state transition and the event reporting it are saved in
the same write, so an event can never be lost or reported for a step that did not happen.

The device identity (its credential) lives in a separate file, ``identity.json``, mode 0600,
written once at enrollment: the frequently rewritten journal never holds the secret.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeota.agent.schedule import SwitchWait
from edgeota.agent.statemachine import State
from edgeota.errors import FormatError
from edgeota.fsutil import atomic_write_text

JOURNAL_SCHEMA = 1
IDENTITY_NAME = "identity.json"
OUTBOX_LIMIT = 1000  # unsent events kept; the oldest are dropped (and counted) past this
FAILED_RELEASES_KEPT = 50

_TORN_HINT = (
    "the journal is written atomically, so a crash cannot leave it like this: suspect disk "
    "corruption or a manual edit. Move the file aside to start from a fresh journal; the "
    "installed slots are kept"
)


@dataclass
class ReleaseRef:
    version: str
    release_id: str
    variant: str | None = None  # the model variant installed, for releases with variants
    needs: dict[str, str] = field(default_factory=dict)  # signed needs of other components


@dataclass
class PendingRelease:
    """The release being downloaded, staged or tried, and the slot it goes into."""

    version: str
    release_id: str
    targets: list[str]
    slot: str
    sha256s: list[str] = field(default_factory=list)  # its downloads, removed when done
    # Per file, the signed bytes downloaded for it, and the files a delta rebuilt: reported
    # with the commit, and kept here so a restart mid-update does not forget them.
    downloaded_bytes: dict[str, int] = field(default_factory=dict)
    delta_files: list[str] = field(default_factory=list)
    variant: str | None = None
    needs: dict[str, str] = field(default_factory=dict)


@dataclass
class ComponentRecord:
    state: State = State.IDLE
    committed_slot: str | None = None
    committed: ReleaseRef | None = None
    pending: PendingRelease | None = None
    trial_attempts: int = 0
    # Releases that failed their health check here; never retried, so a bad release
    # cannot put the device into an install-fail-rollback loop.
    failed_release_ids: list[str] = field(default_factory=list)
    last_error: str | None = None
    # A staged release waiting for its maintenance window, and the user's deferrals of it.
    wait: SwitchWait | None = None
    # Passed its health check but kept on trial until these components' releases, which
    # need it, are committed too: if one of them fails, this one rolls back with it.
    held_for: list[str] = field(default_factory=list)

    def mark_failed(self, release_id: str) -> None:
        if release_id not in self.failed_release_ids:
            self.failed_release_ids.append(release_id)
        del self.failed_release_ids[:-FAILED_RELEASES_KEPT]


@dataclass(frozen=True)
class Identity:
    device_id: str
    credential: str


@dataclass(frozen=True)
class OutboxEvent:
    seq: int
    time: str
    component: str | None  # None for events about the agent itself
    event: str
    state: str
    release_id: str | None = None
    version: str | None = None
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.components: dict[str, ComponentRecord] = {}
        self.identity: Identity | None = None
        self.outbox: list[OutboxEvent] = []
        self.next_seq = 1
        self.dropped_events = 0
        self.inventory_digest: str | None = None

    # -- persistence -------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path) -> Journal:
        """Load the journal at ``path``; a missing file is a fresh journal."""
        journal = cls(path)
        try:
            text = path.read_text("utf-8")
        except FileNotFoundError:
            text = None
        if text is not None:
            try:
                journal._restore(json.loads(text))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise FormatError(f"{path} is not a valid agent journal ({e}); {_TORN_HINT}") from e
        journal.identity = _load_identity(path.parent / IDENTITY_NAME)
        return journal

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self._dump(), indent=1, sort_keys=True), 0o600)

    def save_identity(self, identity: Identity) -> None:
        atomic_write_text(
            self.path.parent / IDENTITY_NAME, json.dumps(asdict(identity), indent=1), 0o600
        )
        self.identity = identity

    def _dump(self) -> dict[str, Any]:
        return {
            "schema": JOURNAL_SCHEMA,
            "components": {name: asdict(rec) for name, rec in self.components.items()},
            "outbox": [e.to_wire() for e in self.outbox],
            "next_seq": self.next_seq,
            "dropped_events": self.dropped_events,
            "inventory_digest": self.inventory_digest,
        }

    def _restore(self, body: dict[str, Any]) -> None:
        if body["schema"] != JOURNAL_SCHEMA:
            raise ValueError(f"unsupported journal schema {body['schema']!r}")
        self.components = {
            str(name): _record_from(raw) for name, raw in dict(body["components"]).items()
        }
        self.outbox = [OutboxEvent(**raw) for raw in body["outbox"]]
        self.next_seq = int(body["next_seq"])
        self.dropped_events = int(body["dropped_events"])
        digest = body.get("inventory_digest")
        self.inventory_digest = None if digest is None else str(digest)
        if self.outbox and self.outbox[-1].seq >= self.next_seq:
            raise ValueError("outbox holds a sequence number at or past next_seq")

    # -- components and events ---------------------------------------------------------
    def component(self, name: str) -> ComponentRecord:
        return self.components.setdefault(name, ComponentRecord())

    def record_event(
        self,
        *,
        time: str,
        component: str | None,
        event: str,
        state: str,
        release_id: str | None = None,
        version: str | None = None,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> OutboxEvent:
        """Append an event to the outbox (saved with the next :meth:`save`)."""
        ev = OutboxEvent(
            seq=self.next_seq,
            time=time,
            component=component,
            event=event,
            state=state,
            release_id=release_id,
            version=version,
            reason=reason,
            detail=dict(detail or {}),
        )
        self.next_seq += 1
        self.outbox.append(ev)
        overflow = len(self.outbox) - OUTBOX_LIMIT
        if overflow > 0:
            # Bounded memory and disk while the network is down for long; the count is
            # reported so the server knows the history has a gap.
            del self.outbox[:overflow]
            self.dropped_events += overflow
        return ev

    def flush_outbox(
        self, post: Callable[[list[dict[str, Any]]], int], now: str, batch: int = 100
    ) -> None:
        """Send unsent events through ``post`` (returns accepted_through), oldest first.

        Events leave the outbox only once the server has accepted them; ``post`` raising
        (the network is down) leaves them for the next call.
        """
        if self.dropped_events:
            dropped, self.dropped_events = self.dropped_events, 0
            self.record_event(
                time=now,
                component=None,
                event="events_dropped",
                state="",
                reason=f"{dropped} events were dropped while the server was unreachable",
                detail={"count": dropped},
            )
            self.save()
        while self.outbox:
            if self.ack(post([e.to_wire() for e in self.outbox[:batch]])) == 0:
                break
            self.save()

    def ack(self, accepted_through: int) -> int:
        """Forget events the server accepted; return how many were removed."""
        before = len(self.outbox)
        self.outbox = [e for e in self.outbox if e.seq > accepted_through]
        return before - len(self.outbox)


def _record_from(raw: dict[str, Any]) -> ComponentRecord:
    committed = raw.get("committed")
    pending = raw.get("pending")
    slot = raw.get("committed_slot")
    if slot not in (None, "a", "b"):
        raise ValueError(f"committed_slot must be 'a', 'b' or null, not {slot!r}")
    rec = ComponentRecord(
        state=State(raw["state"]),
        committed_slot=slot,
        committed=None if committed is None else ReleaseRef(**committed),
        pending=None if pending is None else PendingRelease(**pending),
        trial_attempts=int(raw.get("trial_attempts", 0)),
        failed_release_ids=[str(r) for r in raw.get("failed_release_ids", [])],
        last_error=None if raw.get("last_error") is None else str(raw["last_error"]),
        wait=None if raw.get("wait") is None else SwitchWait.from_json(raw["wait"]),
        held_for=[str(n) for n in raw.get("held_for", [])],
    )
    if rec.state is not State.IDLE and rec.pending is None:
        raise ValueError(f"state {rec.state.value!r} without a pending release")
    if rec.pending is not None and rec.pending.slot not in ("a", "b"):
        raise ValueError(f"pending slot must be 'a' or 'b', not {rec.pending.slot!r}")
    return rec


def _load_identity(path: Path) -> Identity | None:
    try:
        body = json.loads(path.read_text("utf-8"))
        return Identity(device_id=str(body["device_id"]), credential=str(body["credential"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"{path} is not a valid device identity ({e}); {_TORN_HINT}") from e
