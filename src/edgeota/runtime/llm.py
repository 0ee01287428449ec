"""GGUF LLMs served through llama.cpp (llama-cpp-python, the optional ``llm`` extra).

The runtime API stays the one the agent's health check already speaks: ``/v1/infer`` takes
``tokens`` (int32 ``[N, L]``, token IDs of N prompts of one length) and returns, for every
position, the model's top-1 next token (``next_token``, int32 ``[N, L]``) and the
log-probability it gives the prompt's actual next token (``token_logprob``, float32
``[N, L-1]``). A probe set of an LLM is therefore prompts as token IDs with the original
model's greedy next tokens as references, and the release's ``min_agreement`` bounds the share
that must agree (:func:`edgeota.runtime.probe.compare_outputs`). Token IDs rather than text
travel because they are what the model sees: the probe does not depend on how a client would
tokenize. ``/v1/generate`` is the text interface (greedy decoding).

llama_cpp has no type information: :class:`LlamaSession` is the only code that touches it,
and it is imported only when a GGUF model is loaded. llama.cpp is not thread-safe for one
context, so :class:`LoadedLlm` serialises requests with a lock.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeota.errors import FormatError
from edgeota.runtime.probe import Array
from edgeota.runtime.slotmodel import TensorSpec, slot_model_file
from edgeota.slotinfo import SlotInfo

TOKENS = "tokens"
NEXT_TOKEN = "next_token"  # noqa: S105 (an output name, not a secret)
TOKEN_LOGPROB = "token_logprob"  # noqa: S105
MAX_GENERATE_TOKENS = 512


def llama_cpp_available() -> bool:
    """Whether llama-cpp-python is installed (without importing it)."""
    return importlib.util.find_spec("llama_cpp") is not None


def missing_llama_cpp(path: Path) -> str:
    return (
        f"model file {path} is a GGUF model, which this runtime serves through llama.cpp, but "
        "llama-cpp-python is not installed: install the extra on the device "
        "(pip install 'edgeota[llm]'), or publish an ONNX variant for this device class"
    )


@dataclass(frozen=True)
class LlmOptions:
    """How llama.cpp runs the model."""

    threads: int = 1  # one core, as for ONNX: a device keeps cores for its other work
    # Tokens of context; None takes the model's own. The runtime keeps every position's
    # logits (context_length x vocabulary x 4 bytes) so that a probe scores whole prompts.
    context_length: int | None = None


class LlamaSession:
    """A typed wrapper around one ``llama_cpp.Llama``: load, tokenize, score, detokenize."""

    def __init__(self, path: Path, options: LlmOptions | None = None) -> None:
        options = options or LlmOptions()
        if not llama_cpp_available():
            raise FormatError(missing_llama_cpp(path))
        import llama_cpp

        try:
            self._llama: Any = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=options.context_length or 0,
                n_threads=options.threads,
                n_threads_batch=options.threads,
                logits_all=True,
                verbose=False,
            )
        # llama-cpp-python raises ValueError ("Failed to load model from file") and lets
        # other errors of its ctypes layer through.
        except Exception as e:
            raise FormatError(
                f"llama.cpp cannot load GGUF model {path}: {e}; the file is not an LLM that "
                "this llama-cpp-python can run"
            ) from e
        self.vocab_size = int(self._llama.n_vocab())
        self.context_length = int(self._llama.n_ctx())
        self.eos = int(self._llama.token_eos())

    def tokenize(self, text: str) -> list[int]:
        """Token IDs of ``text``, with the BOS token if the model adds one."""
        return [int(t) for t in self._llama.tokenize(text.encode("utf-8"))]

    def detokenize(self, tokens: list[int]) -> str:
        return bytes(self._llama.detokenize(tokens)).decode("utf-8", errors="replace")

    def logits(self, tokens: list[int]) -> Array:
        """``[len(tokens), vocab]`` float32: the next-token logits after each prefix."""
        self._llama.reset()
        self._llama.eval(tokens)
        return np.array(self._llama.scores[: len(tokens)], dtype=np.float32)

    def extend(self, tokens: list[int]) -> Array:
        """Feed ``tokens`` after what was fed since the last :meth:`logits`; the last logits."""
        self._llama.eval(tokens)
        return np.array(self._llama.scores[self._llama.n_tokens - 1], dtype=np.float32)

    def close(self) -> None:
        self._llama.close()


def log_softmax(logits: Array) -> Array:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    result: Array = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return result


def score_prompts(session: LlamaSession, tokens: Array) -> dict[str, Array]:
    """Top-1 next token at every position of every prompt, and the log-probability of each
    prompt's actual next token (what a perplexity is computed from)."""
    rows, length = tokens.shape
    next_token = np.zeros((rows, length), dtype=np.int32)
    logprob = np.zeros((rows, max(length - 1, 0)), dtype=np.float32)
    for i in range(rows):
        row = [int(t) for t in tokens[i]]
        logits = session.logits(row)
        next_token[i] = logits.argmax(axis=1)
        if length > 1:
            logp = log_softmax(logits[:-1])
            logprob[i] = logp[np.arange(length - 1), tokens[i, 1:]]
    return {NEXT_TOKEN: next_token, TOKEN_LOGPROB: logprob}


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: list[int]
    prompt_tokens: int
    finish_reason: str  # "stop" (end-of-sequence token) or "length"


class LoadedLlm:
    """A GGUF LLM of one installed slot, loaded into llama.cpp."""

    kind: str = "llm"
    inputs: tuple[TensorSpec, ...] = (
        TensorSpec(TOKENS, (None, None), "tensor(int32)", np.dtype(np.int32)),
    )
    outputs: tuple[TensorSpec, ...] = (
        TensorSpec(NEXT_TOKEN, (None, None), "tensor(int32)", np.dtype(np.int32)),
        TensorSpec(TOKEN_LOGPROB, (None, None), "tensor(float)", np.dtype(np.float32)),
    )

    def __init__(self, slot: SlotInfo, model_path: Path, session: LlamaSession) -> None:
        self.slot = slot  # use LoadedLlm.load
        self.model_path = model_path
        self.session = session
        self._lock = threading.Lock()

    @classmethod
    def load(cls, slot_dir: Path, options: LlmOptions | None = None) -> LoadedLlm:
        slot, path = slot_model_file(slot_dir)
        if path.suffix != ".gguf":
            raise FormatError(f"model file {path} is not a .gguf file; llama.cpp runs GGUF")
        return cls(slot, path, LlamaSession(path, options))

    def describe(self) -> dict[str, Any]:
        return {
            "vocab_size": self.session.vocab_size,
            "context_length": self.session.context_length,
        }

    def validate(self, inputs: Mapping[str, Any]) -> dict[str, Array]:
        if set(inputs) != {TOKENS}:
            raise ValueError(
                f"this LLM takes exactly one input, {self.inputs[0].describe()}: token IDs of "
                f"prompts of one length; got {sorted(inputs)}"
            )
        try:
            array = np.asarray(inputs[TOKENS])
        except ValueError as e:  # ragged nested lists
            raise ValueError(f"input {TOKENS!r} is not a rectangular array: {e}") from e
        if array.dtype.kind not in "iu":
            raise ValueError(f"input {TOKENS!r} must hold integer token IDs")
        if array.ndim != 2 or 0 in array.shape:
            raise ValueError(f"input {TOKENS!r} must be [prompts, length], got {list(array.shape)}")
        if array.shape[1] > self.session.context_length:
            raise ValueError(
                f"prompts of {array.shape[1]} tokens exceed the context of "
                f"{self.session.context_length} tokens"
            )
        if array.min() < 0 or array.max() >= self.session.vocab_size:
            raise ValueError(f"token IDs must lie in [0, {self.session.vocab_size})")
        return {TOKENS: array.astype(np.int32)}

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Array]:
        tokens = self.validate(inputs)[TOKENS]
        with self._lock:
            return score_prompts(self.session, tokens)

    def generate(self, prompt: str, max_tokens: int) -> Generation:
        """Greedy continuation of ``prompt``: at most ``max_tokens`` tokens, fewer at the
        end-of-sequence token or the end of the context."""
        if not 1 <= max_tokens <= MAX_GENERATE_TOKENS:
            raise ValueError(f"max_tokens must be between 1 and {MAX_GENERATE_TOKENS}")
        with self._lock:
            ids = self.session.tokenize(prompt)
            room = self.session.context_length - len(ids)
            if not ids or room < 1:
                raise ValueError(
                    f"the prompt is {len(ids)} tokens; the context holds "
                    f"{self.session.context_length}"
                )
            logits = self.session.logits(ids)[-1]
            out: list[int] = []
            reason = "length"
            for _ in range(min(max_tokens, room)):
                token = int(logits.argmax())
                if token == self.session.eos:
                    reason = "stop"
                    break
                out.append(token)
                if len(out) < min(max_tokens, room):
                    logits = self.session.extend([token])
            return Generation(self.session.detokenize(out), out, len(ids), reason)
