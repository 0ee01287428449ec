"""Recognise a model container from the first bytes and structure of a file."""

from __future__ import annotations

from collections.abc import Callable

from edgeota.delta import container_gguf, container_onnx, container_safetensors
from edgeota.delta.container import Layout
from edgeota.delta.format import Container

Parser = Callable[[memoryview], Layout | None]

# GGUF and safetensors announce themselves in their first bytes; ONNX (a bare protobuf) is
# tried last because recognising it means walking its structure.
_PARSERS: tuple[Parser, ...] = (
    container_gguf.parse,
    container_safetensors.parse,
    container_onnx.parse,
)


def detect(data: memoryview) -> Layout:
    """The layout of ``data`` under the first parser that accepts it, else ``generic``."""
    for parse in _PARSERS:
        layout = parse(data)
        if layout is not None:
            return layout
    return Layout(Container.GENERIC, ())
