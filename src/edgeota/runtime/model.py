"""The model installed in a slot, loaded into onnxruntime.

``LoadedModel.load`` raises FormatError with what is wrong and what to do when a slot cannot
serve (no slot description, no model file, a file of the wrong size, a file onnxruntime
rejects), so a runtime that cannot start says why before it exits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgeota.errors import FormatError
from edgeota.fsutil import safe_join
from edgeota.runtime.probe import Array
from edgeota.slotinfo import SLOT_INFO_NAME, SlotInfo

# onnxruntime's element type names and the numpy dtypes that hold them.
_ORT_DTYPES: dict[str, np.dtype[Any]] = {
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
# Which kinds of input values may be cast to a tensor of a given kind without losing meaning.
_ACCEPTED_KINDS = {"f": "biuf", "i": "biu", "u": "bu", "b": "b"}


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
        return cls(str(arg.name), shape, str(arg.type), _ORT_DTYPES.get(str(arg.type)))

    def describe(self) -> str:
        dims = ", ".join("N" if d is None else str(d) for d in self.shape)
        # np.dtype has a length (its field count), so "or" would treat float32 as empty.
        kind = self.type if self.dtype is None else self.dtype.name
        return f"{self.name} ({kind} [{dims}])"


class LoadedModel:
    """An onnxruntime session for the model file of one installed slot."""

    def __init__(
        self, slot: SlotInfo, model_path: Path, session: Any
    ) -> None:  # use LoadedModel.load
        self.slot = slot
        self.model_path = model_path
        self._session = session
        self.inputs = tuple(TensorSpec.from_ort(a) for a in session.get_inputs())
        self.outputs = tuple(TensorSpec.from_ort(a) for a in session.get_outputs())
        self._inputs_by_name = {spec.name: spec for spec in self.inputs}

    @classmethod
    def load(cls, slot_dir: Path) -> LoadedModel:
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
        if path.suffix == ".gguf":
            raise FormatError(
                f"model file {path} is a GGUF model; this runtime serves ONNX models, and GGUF "
                "needs llama.cpp (llama-cpp-python), which it does not drive: publish an ONNX "
                "variant for this device class"
            )
        if path.suffix != ".onnx":
            raise FormatError(f"model file {path} is not an .onnx file; this runtime runs ONNX")
        options = ort.SessionOptions()
        # One thread per inference: a device keeps cores for its other work, and concurrent
        # requests each get their own thread from the HTTP server.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: warnings go through our own messages
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        # onnxruntime's exceptions derive straight from Exception, so nothing narrower works.
        except Exception as e:
            raise FormatError(
                f"onnxruntime cannot load model file {path} of release {slot.release_id}: "
                f"{e}; the file is not a valid ONNX model for this runtime"
            ) from e
        return cls(slot, path, session)

    def validate(self, inputs: Mapping[str, Any]) -> dict[str, Array]:
        """Turn request values (arrays or nested lists) into the arrays the model takes.

        Raises ValueError naming the input and what was expected.
        """
        unknown = sorted(set(inputs) - set(self._inputs_by_name))
        if unknown:
            takes = ", ".join(spec.describe() for spec in self.inputs)
            raise ValueError(f"unknown input(s) {unknown}; this model takes {takes}")
        missing = sorted(set(self._inputs_by_name) - set(inputs))
        if missing:
            raise ValueError(
                "missing input(s): "
                + ", ".join(self._inputs_by_name[name].describe() for name in missing)
            )
        return {name: self._convert(self._inputs_by_name[name], v) for name, v in inputs.items()}

    @staticmethod
    def _convert(spec: TensorSpec, value: Any) -> Array:
        if spec.dtype is None:
            raise ValueError(
                f"input {spec.name!r} has type {spec.type}, which this runtime cannot feed"
            )
        try:
            array = np.asarray(value)
        except ValueError as e:  # ragged nested lists
            raise ValueError(f"input {spec.name!r} is not a rectangular array: {e}") from e
        if array.dtype.kind not in _ACCEPTED_KINDS[spec.dtype.kind]:
            raise ValueError(
                f"input {spec.name!r} must hold {spec.dtype.name} values, "
                f"got {array.dtype.name if array.dtype.kind != 'O' else 'mixed values'}"
            )
        if array.ndim != len(spec.shape) or any(
            want is not None and want != got
            for want, got in zip(spec.shape, array.shape, strict=False)
        ):
            raise ValueError(
                f"input {spec.name!r} has shape {list(array.shape)}, expected {spec.describe()}"
            )
        return array.astype(spec.dtype, copy=False)

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Array]:
        """Validate ``inputs`` and run the model; outputs are keyed by name."""
        feed = self.validate(inputs)
        names = [spec.name for spec in self.outputs]
        results = self._session.run(names, feed)
        return {name: np.asarray(result) for name, result in zip(names, results, strict=True)}
