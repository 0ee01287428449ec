"""Ops for a model container: tensors against old tensors, everything else inline.

Per tensor of NEW, in file order:
- the same bytes exist as some old tensor (unchanged, renamed, reshaped, moved): a copy op;
- else its reference is the old tensor of the same name (same element layout), or for a
  renamed-and-changed tensor the most similar old tensor of the same size; the tensor encoder
  picks the cheapest codec, low-rank included;
- no reference (an added tensor): the raw codec.
The bytes between tensors (headers, metadata, framing, padding) go inline into the control
stream, which is compressed with the old file's non-tensor bytes as its dictionary: unchanged
metadata costs next to nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from edgeota.delta.container import ElementLayout, Layout, TensorSpan
from edgeota.delta.encode import choose_tensor, trial_cost
from edgeota.delta.format import Codec
from edgeota.delta.writer import PatchWriter, clip_ranges

_MAX_SIMILAR_CANDIDATES = 64
_SIMILAR_SAMPLE = 64 << 10


def gap_ranges(layout: Layout, size: int) -> list[tuple[int, int]]:
    """The non-tensor ranges of a file, in order."""
    ranges = []
    pos = 0
    for t in layout.tensors:
        if t.offset > pos:
            ranges.append((pos, t.offset - pos))
        pos = t.end
    if size > pos:
        ranges.append((pos, size - pos))
    return ranges


def dictionary_ranges(old_layout: Layout, old_size: int) -> list[tuple[int, int]]:
    return clip_ranges(gap_ranges(old_layout, old_size))


def _digest(data: memoryview) -> bytes:
    # sha256 runs on the CPU's SHA extensions where present: about twice blake2b's speed here, and
    # every tensor of both files passes through it.
    return hashlib.sha256(data).digest()


def _same_elements(a: ElementLayout, b: ElementLayout) -> bool:
    return a.elem == b.elem and a.stride == b.stride and a.kind == b.kind


class _OldIndex:
    def __init__(self, old: memoryview, layout: Layout) -> None:
        self.old = old
        self.by_digest: dict[bytes, TensorSpan] = {}
        self.by_name: dict[str, TensorSpan] = {}
        self.by_length: dict[int, list[TensorSpan]] = {}
        for t in layout.tensors:
            self.by_digest.setdefault(_digest(old[t.offset : t.end]), t)
            self.by_name.setdefault(t.name, t)
            self.by_length.setdefault(t.length, []).append(t)

    def identical(self, data: memoryview) -> TensorSpan | None:
        span = self.by_digest.get(_digest(data))
        if span is not None and self.old[span.offset : span.end] == data:
            return span
        return None

    def reference(self, t: TensorSpan, data: memoryview, new_names: set[str]) -> TensorSpan | None:
        named = self.by_name.get(t.name)
        if named is not None and _same_elements(named.layout, t.layout):
            return named
        if named is not None:
            return None  # same name, other dtype: its bytes say nothing about these
        return self._most_similar(t, data, new_names)

    def _most_similar(
        self, t: TensorSpan, data: memoryview, new_names: set[str]
    ) -> TensorSpan | None:
        # Only old tensors whose name is gone from NEW: the others are references already.
        candidates = [
            c
            for c in self.by_length.get(t.length, [])
            if c.name not in new_names and _same_elements(c.layout, t.layout)
        ][:_MAX_SIMILAR_CANDIDATES]
        if not candidates:
            return None
        width = min(len(data), _SIMILAR_SAMPLE)
        width -= width % t.layout.stride
        if width == 0:
            return None
        sample = [(0, width)]
        raw = trial_cost(data, None, Codec.RAW, t.layout, 1, sample)
        scored = [
            (trial_cost(data, self.old[c.offset : c.end], Codec.SUB, t.layout, 1, sample), c)
            for c in candidates
        ]
        cost, best = min(scored, key=lambda sc: sc[0])
        return best if cost < 0.8 * raw else None


def write_container_ops(
    writer: PatchWriter,
    old: memoryview,
    new: memoryview,
    old_layout: Layout,
    new_layout: Layout,
    level: int,
    workdir: Path,
) -> None:
    index = _OldIndex(old, old_layout)
    new_names = {t.name for t in new_layout.tensors}
    pos = 0
    for t in new_layout.tensors:
        writer.inline(new[pos : t.offset])
        data = new[t.offset : t.end]
        same = index.identical(data)
        if same is not None:
            writer.copy(same.offset, t.length)
        else:
            ref = index.reference(t, data, new_names)
            ref_view = old[ref.offset : ref.end] if ref is not None else None
            enc = choose_tensor(data, ref_view, ref.offset if ref else 0, t.layout, level, workdir)
            try:
                writer.payload_op(enc.op, enc.payload)
            finally:
                enc.close()
        pos = t.end
    writer.inline(new[pos:])
