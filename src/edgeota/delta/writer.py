"""Assemble a patch file: ops into a compressed control stream, payloads into a data section.

Both are spooled to scratch files next to the patch, so creating a patch of a model of any
size takes little memory; the final file is written once, hashed as it is written, and moved
into place atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import IO

from edgeota.delta.format import (
    MAX_DICT_BYTES,
    MAX_DICT_RANGES,
    MAX_INLINE,
    Container,
    Method,
    PatchHeader,
    PatchInfo,
    SectionStats,
    info_from_header,
    pack_ranges,
    pack_summary,
)
from edgeota.delta.ops import (
    CopyOp,
    InlineOp,
    Op,
    op_method,
    op_out_length,
    op_payload_length,
    pack_op,
)
from edgeota.delta.zstdio import compressor
from edgeota.fsutil import fsync_dir

_COPY_BUFFER = 1 << 20
_SPOOL_MAX = 64 << 20


def clip_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Keep the leading ranges that fit the dictionary limits (count and total bytes)."""
    out: list[tuple[int, int]] = []
    total = 0
    for offset, length in ranges:
        if not length:
            continue
        if len(out) == MAX_DICT_RANGES or total == MAX_DICT_BYTES:
            break
        kept = min(length, MAX_DICT_BYTES - total)
        out.append((offset, kept))
        total += kept
    return out


class PatchWriter:
    """Collects ops in output order, then ``finish`` writes the patch file."""

    def __init__(
        self,
        control: IO[bytes],
        data: IO[bytes],
        *,
        level: int,
        dict_ranges: list[tuple[int, int]],
        dict_data: bytes,
    ) -> None:
        """``control`` and ``data`` are empty scratch files the caller owns and removes."""
        self._ranges = dict_ranges
        self._dict_data = dict_data
        self._level = level
        self._control = control  # ops, uncompressed until ``finish``
        self._data = data
        self._pending_copy: CopyOp | None = None
        self._pending_inline = bytearray()
        self._stats: dict[Method, list[int]] = {}
        self.produced = 0

    def _count(self, op: Op) -> None:
        s = self._stats.setdefault(op_method(op), [0, 0, 0])
        s[0] += 1
        s[1] += op_out_length(op)
        s[2] += op_payload_length(op)
        self.produced += op_out_length(op)

    def _emit(self, op: Op) -> None:
        self._control.write(pack_op(op))

    def _flush_pending(self) -> None:
        if self._pending_copy is not None:
            self._count(self._pending_copy)
            self._emit(self._pending_copy)
            self._pending_copy = None
        data = bytes(self._pending_inline)
        for start in range(0, len(data), MAX_INLINE):
            op = InlineOp(data[start : start + MAX_INLINE])
            self._count(op)
            self._emit(op)
        self._pending_inline.clear()

    def copy(self, old_offset: int, length: int) -> None:
        if not length:
            return
        pending = self._pending_copy
        if pending is not None and pending.old_offset + pending.length == old_offset:
            self._pending_copy = CopyOp(pending.old_offset, pending.length + length)
            return
        self._flush_pending()
        self._pending_copy = CopyOp(old_offset, length)

    def inline(self, data: bytes | memoryview) -> None:
        if not len(data):
            return
        if self._pending_copy is not None:
            self._flush_pending()
        self._pending_inline += data

    def payload_op(self, op: Op, payload: IO[bytes]) -> None:
        """Add an op whose payload (``op.payload_length`` bytes) is read from ``payload``."""
        self._flush_pending()
        payload.seek(0)
        before = self._data.tell()
        shutil.copyfileobj(payload, self._data, _COPY_BUFFER)
        if self._data.tell() - before != op_payload_length(op):
            raise RuntimeError("payload length does not match its op")
        self._count(op)
        self._emit(op)

    def finish(
        self,
        patch: Path,
        *,
        container: Container,
        old_size: int,
        old_sha256: bytes,
        new_size: int,
        new_sha256: bytes,
    ) -> PatchInfo:
        self._flush_pending()
        if self.produced != new_size:
            raise RuntimeError(f"ops produce {self.produced} bytes, expected {new_size}")
        self._control.write(b"\x00")  # END
        stats = [SectionStats(m, *self._stats[m]) for m in sorted(self._stats) if self._stats[m][0]]
        summary = pack_summary(stats)
        header = PatchHeader(
            container=container,
            old_size=old_size,
            old_sha256=old_sha256,
            new_size=new_size,
            new_sha256=new_sha256,
            dict_ranges=len(self._ranges),
            summary_length=len(summary),
            control_length=0,
            data_length=self._data.tell(),
        )
        # Compressed in one go with its size known: the frame then records its content size,
        # and apply's decoder sizes its buffer to that rather than to the whole window.
        raw_size = self._control.tell()
        self._control.seek(0)
        cctx = compressor(self._level, raw_size, self._dict_data or None)
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_MAX, dir=str(patch.parent)) as packed:
            cctx.copy_stream(self._control, packed, size=raw_size)
            header = replace(header, control_length=packed.tell())
            self._write_file(patch, header, summary, packed)
        return info_from_header(header, stats)

    def _write_file(
        self, patch: Path, header: PatchHeader, summary: bytes, control: IO[bytes]
    ) -> None:
        patch.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{patch.name}.", suffix=".tmp", dir=patch.parent)
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:

                def put(data: bytes) -> None:
                    digest.update(data)
                    out.write(data)

                put(header.pack())
                put(pack_ranges(self._ranges))
                for spool in (control, self._data):
                    spool.seek(0)
                    while chunk := spool.read(_COPY_BUFFER):
                        put(chunk)
                put(summary)
                out.write(digest.digest())
                out.flush()
                os.fsync(out.fileno())
            tmp.chmod(0o644)
            tmp.replace(patch)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        fsync_dir(patch.parent)
