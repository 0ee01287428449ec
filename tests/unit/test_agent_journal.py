"""The journal: round-trips, survives a crash at any point of a write, bounds its outbox."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from edgeota.agent.journal import (
    OUTBOX_LIMIT,
    Identity,
    Journal,
    PendingRelease,
    ReleaseRef,
)
from edgeota.agent.statemachine import State
from edgeota.errors import FormatError, TransportError


def sample(path: Path) -> Journal:
    j = Journal(path)
    rec = j.component("denoiser")
    rec.state = State.TRIAL
    rec.committed_slot = "a"
    rec.committed = ReleaseRef("1.0.0", "rel-1")
    rec.pending = PendingRelease("2.0.0", "rel-2", ["denoiser/2.0.0/model.onnx"], "b", ["ab" * 32])
    rec.trial_attempts = 1
    rec.mark_failed("rel-0")
    j.record_event(
        time="2024-01-01T00:00:00.000Z",
        component="denoiser",
        event="switched",
        state="trial",
        release_id="rel-2",
        version="2.0.0",
        detail={"x": 1},
    )
    j.inventory_digest = "d1"
    return j


def test_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    j = sample(path)
    j.save()
    back = Journal.load(path)
    assert back.components == j.components
    assert back.outbox == j.outbox
    assert back.next_seq == 2 and back.inventory_digest == "d1"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_missing_journal_is_a_fresh_one(tmp_path: Path) -> None:
    j = Journal.load(tmp_path / "journal.json")
    assert j.components == {} and j.identity is None and j.next_seq == 1


def test_crash_between_write_and_rename_keeps_the_old_state(tmp_path: Path) -> None:
    """Row 15: a crash leaves the temp file behind; the journal itself is the old one."""
    path = tmp_path / "journal.json"
    old = sample(path)
    old.save()
    # What atomic_write_text leaves when killed after writing the temp file, before rename:
    (tmp_path / ".journal.json.k2j4.tmp").write_text('{"schema": 1, "components": {"den')
    (tmp_path / ".journal.json.x9.tmp").write_text("")
    back = Journal.load(path)
    assert back.components == old.components


@pytest.mark.parametrize("text", ["", '{"schema": 1, "compo', "[]", "null", '{"schema": 99}'])
def test_torn_or_invalid_journal_is_a_format_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "journal.json"
    path.write_text(text)
    with pytest.raises(FormatError, match="written atomically"):
        Journal.load(path)


def test_state_without_pending_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    j = sample(path)
    j.component("denoiser").pending = None
    j.save()
    with pytest.raises(FormatError, match="without a pending release"):
        Journal.load(path)


def test_identity_is_stored_apart_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    j = Journal(path)
    j.save_identity(Identity("dev-1", "secret-credential"))
    j.save()
    ident = tmp_path / "identity.json"
    assert stat.S_IMODE(ident.stat().st_mode) == 0o600
    assert "secret-credential" not in path.read_text()
    assert Journal.load(path).identity == Identity("dev-1", "secret-credential")


def test_outbox_is_bounded_and_counts_what_it_drops(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.json")
    for i in range(OUTBOX_LIMIT + 5):
        j.record_event(time="t", component="c", event=f"e{i}", state="idle")
    assert len(j.outbox) == OUTBOX_LIMIT
    assert j.dropped_events == 5
    assert j.outbox[0].seq == 6 and j.outbox[-1].seq == OUTBOX_LIMIT + 5


def test_flush_sends_in_order_and_keeps_events_until_accepted(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.json")
    for i in range(250):
        j.record_event(time="t", component="c", event=f"e{i}", state="idle")
    received: list[int] = []

    def down(batch: list[dict[str, object]]) -> int:
        raise TransportError("network down")

    with pytest.raises(TransportError):
        j.flush_outbox(down, "t")
    assert len(j.outbox) == 250

    def post(batch: list[dict[str, object]]) -> int:
        seqs = [int(str(e["seq"])) for e in batch]
        received.extend(seqs)
        return max(seqs)

    j.flush_outbox(post, "t")
    assert received == list(range(1, 251))
    assert j.outbox == []
    assert json.loads((tmp_path / "journal.json").read_text())["outbox"] == []


def test_flush_reports_dropped_events(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.json")
    j.dropped_events = 7
    sent: list[dict[str, object]] = []

    def post(batch: list[dict[str, object]]) -> int:
        sent.extend(batch)
        return int(str(batch[-1]["seq"]))

    j.flush_outbox(post, "t")
    assert sent[-1]["event"] == "events_dropped" and sent[-1]["detail"] == {"count": 7}
    assert j.dropped_events == 0


def test_failed_releases_are_bounded(tmp_path: Path) -> None:
    rec = Journal(tmp_path / "j.json").component("c")
    for i in range(80):
        rec.mark_failed(f"rel-{i}")
    rec.mark_failed("rel-79")
    assert len(rec.failed_release_ids) == 50 and rec.failed_release_ids[-1] == "rel-79"
