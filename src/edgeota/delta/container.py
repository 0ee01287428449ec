"""Where the tensors are inside a model file, recognised from its content (never its name).

A parser returns a ``Layout``: the byte span of each tensor's data plus how its elements are laid
out. Everything outside the spans (headers, metadata, protobuf framing, padding) is left to the
caller. Parsers run at create time only: apply never parses a container, it follows ops. A file
that does not parse as a known container is simply ``generic``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgeota.delta.format import Container, FloatKind


@dataclass(frozen=True)
class ElementLayout:
    """How a tensor's bytes group into elements.

    ``elem``: integer width for XOR/SUB; ``stride``: byte-plane shuffle period (the element
    size, or the block size of a quantized type); ``kind``: set for f32/f16/bf16 tensors, the
    ones a low-rank update can be detected in; ``shape``: numpy order (last axis contiguous),
    when the span holds exactly that many elements.
    """

    elem: int = 1
    stride: int = 1
    kind: FloatKind | None = None
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class TensorSpan:
    name: str
    offset: int
    length: int
    layout: ElementLayout

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class Layout:
    container: Container
    tensors: tuple[TensorSpan, ...]


def plain_layout(
    itemsize: int, kind: FloatKind | None, shape: tuple[int, ...], length: int
) -> ElementLayout:
    """Layout of an ordinary numeric dtype; the shape is kept only if it matches the length."""
    count = 1
    for dim in shape:
        count *= dim
    exact = count * itemsize == length
    return ElementLayout(itemsize, itemsize, kind, shape if exact else None)


def clean_spans(spans: Sequence[TensorSpan], size: int) -> tuple[TensorSpan, ...]:
    """Sort spans, drop empty, out-of-file and overlapping ones (first wins)."""
    out: list[TensorSpan] = []
    end = 0
    for span in sorted(spans, key=lambda s: (s.offset, -s.length)):
        if span.length <= 0 or span.offset < end or span.end > size:
            continue
        out.append(span)
        end = span.end
    return tuple(out)
