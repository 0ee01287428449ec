"""The model file of an installed slot, and which backend serves it.

The runtime serves ONNX models with onnxruntime (:mod:`edgeota.runtime.model`) and GGUF LLMs
with llama.cpp (:mod:`edgeota.runtime.llm`, when the ``llm`` extra is installed). Each backend
is imported only when the slot's model needs it, so an ONNX runtime never loads llama.cpp and
an LLM runtime never loads onnxruntime: both would cost the device memory for nothing.

:func:`slot_model_file` does the checks every backend shares and raises FormatError with what
is wrong and what to do (no slot description, no model file, a file of the wrong size).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeota.errors import FormatError
from edgeota.fsutil import safe_join
from edgeota.runtime.probe import Array
from edgeota.slotinfo import SLOT_INFO_NAME, SlotInfo

# onnxruntime's element type names and the numpy dtypes that hold them.
ORT_DTYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(bool)": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output. ``None`` in ``shape`` is a free (e.g. batch) dimension."""

    name: str
    shape: tuple[int | None, ...]
    type: str  # onnxruntime's name, e.g. "tensor(float)"
    dtype: np.dtype[Any] | None  # None for types this runtime cannot feed

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "type": self.type,
            "dtype": None if self.dtype is None else self.dtype.name,
        }

    @classmethod
    def from_ort(cls, arg: Any) -> TensorSpec:
        # Symbolic dimensions come back as strings ("N", "batch"), unknown ones as None.
        shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in arg.shape)
        return cls(str(arg.name), shape, str(arg.type), ORT_DTYPES.get(str(arg.type)))

    def describe(self) -> str:
        dims = ", ".join("N" if d is None else str(d) for d in self.shape)
        # np.dtype has a length (its field count), so "or" would treat float32 as empty.
        kind = self.type if self.dtype is None else self.dtype.name
        return f"{self.name} ({kind} [{dims}])"


class ServedModel(Protocol):
    """What the HTTP server needs from a loaded model, whatever its backend."""

    slot: SlotInfo
    model_path: Path
    kind: str  # "onnx" or "llm"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def validate(self, inputs: Mapping[str, Any]) -> dict[str, Array]:
        """Request values as the arrays the model takes; ValueError naming what is wrong."""
        ...

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Array]:
        """Validate and run; outputs keyed by name."""
        ...


def slot_model_file(slot_dir: Path) -> tuple[SlotInfo, Path]:
    """The slot's description and its model file, checked for presence and length."""
    try:
        slot = SlotInfo.read(slot_dir)
    except FileNotFoundError as e:
        raise FormatError(
            f"{slot_dir} has no {SLOT_INFO_NAME}: the slot is empty or was not fully "
            "installed; install a release into it before starting the runtime"
        ) from e
    entry = slot.file_with_role("model")
    if entry is None:
        raise FormatError(
            f"release {slot.release_id} in {slot_dir} lists no file with role 'model'; "
            "publish the release with its model file marked as role 'model'"
        )
    path = safe_join(slot_dir, entry.file)
    try:
        size = path.stat().st_size
    except FileNotFoundError as e:
        raise FormatError(f"model file {path} is missing; reinstall the release") from e
    # The agent verified the hash when it installed the slot; re-hashing a large model at
    # every start would be slow, but a length check still catches truncation on disk.
    if size != entry.length:
        raise FormatError(
            f"model file {path} is {size} bytes, but the slot description says "
            f"{entry.length}: the slot is damaged; reinstall the release"
        )
    return slot, path


def load_slot_model(slot_dir: Path) -> ServedModel:
    """The slot's model loaded into the backend for its format (by file suffix)."""
    _, path = slot_model_file(slot_dir)
    if path.suffix == ".gguf":
        from edgeota.runtime.llm import LoadedLlm

        return LoadedLlm.load(slot_dir)
    from edgeota.runtime.model import LoadedModel

    return LoadedModel.load(slot_dir)
