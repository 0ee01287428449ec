"""The on-device inference API: a small HTTP server in front of the slot's model.

    GET  /healthz    200 {"status": "ok", "component", "version", "release_id"}
    GET  /v1/model   the model's kind ("onnx" or "llm"), inputs and outputs (name, shape, type)
    POST /v1/infer   {"inputs": {name: nested lists}}
                     -> {"outputs": {...}, "latency_ms": float, "peak_rss_mb": float}
    POST /v1/generate  LLMs only: {"prompt": str, "max_tokens": int}
                     -> {"text", "tokens", "prompt_tokens", "finish_reason", "latency_ms",
                         "peak_rss_mb"} (greedy decoding)

An LLM (a GGUF model, served through llama.cpp: edgeota.runtime.llm) takes ``tokens`` at
``/v1/infer`` and returns each position's top-1 ``next_token``, so the agent's health check
runs an LLM's probe set the way it runs any other.

``peak_rss_mb`` is the process's peak resident memory so far (loading included), which the
device's health check holds against the release's ``max_peak_rss_mb`` budget.

Errors are JSON ``{"error": message}``: 400 for a body that is not the JSON object above, 411
without a Content-Length, 413 past ``max_body_bytes``, 422 for inputs the model cannot take.
Non-finite output values are written as ``null`` (strict JSON has no NaN).

The standard library's threading HTTP server is enough for a local API and keeps the device's
dependencies to onnxruntime (or llama.cpp) and numpy. The model is loaded before the port
opens, so a runtime that answers ``/healthz`` is serving its slot's release; one that cannot
load its model exits non-zero with the reason on stderr, which the agent reads as a failed
start.

Run as ``python -m edgeota.runtime.server --slot-dir DIR [--host H] [--port P]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from edgeota import __version__
from edgeota.errors import EdgeotaError
from edgeota.fsutil import atomic_write_text
from edgeota.runtime.llm import LoadedLlm
from edgeota.runtime.probe import Array
from edgeota.runtime.resources import peak_rss_mb
from edgeota.runtime.slotmodel import ServedModel, load_slot_model

# A fixed name: under "python -m" __name__ is "__main__".
logger = logging.getLogger("edgeota.runtime.server")

DEFAULT_PORT = 8510
MAX_BODY_BYTES = 16 * 1024 * 1024
# An oversized body up to this many bytes is read and discarded before the 413 goes out:
# closing a socket with unread data resets the connection, and the client would see a reset
# instead of the answer. Anything larger is cut off at once.
_DRAIN_LIMIT_BYTES = 4 * MAX_BODY_BYTES
_CHUNK_BYTES = 1 << 16


class RuntimeHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that serves one loaded model."""

    daemon_threads = True  # an idle keep-alive connection must not hold up shutdown

    def __init__(
        self, address: tuple[str, int], model: ServedModel, max_body_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self.model = model
        self.max_body_bytes = max_body_bytes
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def _json_values(array: Array) -> Any:
    """Nested lists for JSON, with ``None`` in place of NaN and infinities."""
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            values = array.astype(object)
            values[~finite] = None
            return values.tolist()
    return array.tolist()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"edgeota-runtime/{__version__}"
    timeout = 30  # seconds a connection may sit idle or trickle a request

    @property
    def _runtime(self) -> RuntimeHTTPServer:
        assert isinstance(self.server, RuntimeHTTPServer)
        return self.server

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _send_json(self, status: int, body: dict[str, Any], *, close: bool = False) -> None:
        data = json.dumps(body, allow_nan=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: int, message: str, *, close: bool = False) -> None:
        self._send_json(status, {"error": message}, close=close)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        slot = self._runtime.model.slot
        if path == "/healthz":
            self._send_json(
                HTTPStatus.OK,
                {
                    "status": "ok",
                    "component": slot.component,
                    "version": slot.version,
                    "release_id": slot.release_id,
                },
            )
        elif path == "/v1/model":
            model = self._runtime.model
            self._send_json(
                HTTPStatus.OK,
                {
                    "component": slot.component,
                    "version": slot.version,
                    "release_id": slot.release_id,
                    "kind": model.kind,
                    **(model.describe() if isinstance(model, LoadedLlm) else {}),
                    "inputs": [spec.to_json() for spec in model.inputs],
                    "outputs": [spec.to_json() for spec in model.outputs],
                },
            )
        elif path in ("/v1/infer", "/v1/generate"):
            self._send_error(HTTPStatus.METHOD_NOT_ALLOWED, f"use POST for {path}")
        else:
            self._send_error(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path not in ("/v1/infer", "/v1/generate"):
            self._send_error(HTTPStatus.NOT_FOUND, f"no such endpoint for POST: {path}")
            return
        body = self._read_body()
        if body is None:
            return
        if path == "/v1/infer":
            self._infer(body)
        else:
            self._generate(body)

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering with an error."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._send_error(
                HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length", close=True
            )
            return None
        header = self.headers.get("Content-Length")
        if header is None:
            self._send_error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required", close=True)
            return None
        if not (header.isascii() and header.isdigit()):
            self._send_error(HTTPStatus.BAD_REQUEST, f"bad Content-Length {header!r}", close=True)
            return None
        length = int(header)
        limit = self._runtime.max_body_bytes
        if length > limit:
            if length <= _DRAIN_LIMIT_BYTES:
                self._discard(length)
            self._send_error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body of {length} bytes exceeds the limit of {limit} bytes; "
                "send fewer examples per request",
                close=True,
            )
            return None
        body = self.rfile.read(length)
        if len(body) < length:  # the client went away mid-body
            self.close_connection = True
            return None
        return body

    def _discard(self, length: int) -> None:
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, _CHUNK_BYTES))
            if not chunk:
                return
            remaining -= len(chunk)

    def _infer(self, body: bytes) -> None:
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            self._send_error(HTTPStatus.BAD_REQUEST, f"request body is not valid JSON: {e}")
            return
        if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), dict):
            self._send_error(
                HTTPStatus.BAD_REQUEST,
                'expected a JSON object {"inputs": {"<input name>": <nested lists>}}',
            )
            return
        model = self._runtime.model
        try:
            feed = model.validate(payload["inputs"])
        except ValueError as e:
            self._send_error(HTTPStatus.UNPROCESSABLE_ENTITY, str(e))
            return
        start = time.perf_counter()
        try:
            outputs = model.run(feed)
        # A model can fail on particular values; the service must keep answering others.
        except Exception as e:
            logger.warning("inference failed for release %s: %s", model.slot.release_id, e)
            self._send_error(HTTPStatus.INTERNAL_SERVER_ERROR, f"inference failed: {e}")
            return
        latency_ms = (time.perf_counter() - start) * 1000.0
        self._send_json(
            HTTPStatus.OK,
            {
                "outputs": {name: _json_values(value) for name, value in outputs.items()},
                "latency_ms": latency_ms,
                "peak_rss_mb": peak_rss_mb(),
            },
        )

    def _generate(self, body: bytes) -> None:
        model = self._runtime.model
        if not isinstance(model, LoadedLlm):
            self._send_error(
                HTTPStatus.NOT_FOUND,
                f"this release serves an {model.kind} model; /v1/generate needs an LLM (GGUF)",
            )
            return
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            self._send_error(HTTPStatus.BAD_REQUEST, f"request body is not valid JSON: {e}")
            return
        prompt = payload.get("prompt") if isinstance(payload, dict) else None
        max_tokens = payload.get("max_tokens", 32) if isinstance(payload, dict) else None
        if (
            not isinstance(prompt, str)
            or not isinstance(max_tokens, int)
            or isinstance(max_tokens, bool)
        ):
            self._send_error(
                HTTPStatus.BAD_REQUEST,
                'expected a JSON object {"prompt": "<text>", "max_tokens": <integer>}',
            )
            return
        start = time.perf_counter()
        try:
            result = model.generate(prompt, max_tokens)
        except ValueError as e:
            self._send_error(HTTPStatus.UNPROCESSABLE_ENTITY, str(e))
            return
        # llama-cpp-python raises RuntimeError (a failed decode) and lets ctypes errors through.
        except Exception as e:
            logger.warning("generation failed for release %s: %s", model.slot.release_id, e)
            self._send_error(HTTPStatus.INTERNAL_SERVER_ERROR, f"generation failed: {e}")
            return
        latency_ms = (time.perf_counter() - start) * 1000.0
        self._send_json(
            HTTPStatus.OK,
            {
                "text": result.text,
                "tokens": result.tokens,
                "prompt_tokens": result.prompt_tokens,
                "finish_reason": result.finish_reason,
                "latency_ms": latency_ms,
                "peak_rss_mb": peak_rss_mb(),
            },
        )


def build_runtime_server(
    model: ServedModel, host: str = "127.0.0.1", port: int = 0
) -> RuntimeHTTPServer:
    """Bind a server for ``model`` (port 0 picks a free port); call ``serve_forever`` to run."""
    return RuntimeHTTPServer((host, port), model)


@contextlib.contextmanager
def _shutdown_on_signals(server: RuntimeHTTPServer) -> Iterator[None]:
    """Stop ``server`` cleanly on SIGTERM or SIGINT while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        # shutdown() waits for serve_forever() to return, which runs in this very thread:
        # call it from another one.
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(
    slot_dir: Path,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    ready_file: Path | None = None,
) -> None:
    """Load the slot's model and serve it until SIGTERM or SIGINT.

    Raises EdgeotaError when the model cannot be loaded and OSError when the port cannot be
    bound. Once listening, writes ``ready_file`` (JSON with pid, host, port, release_id) if
    given, and removes it again on a clean shutdown.
    """
    model = load_slot_model(slot_dir)
    server = build_runtime_server(model, host, port)
    slot = model.slot
    try:
        with _shutdown_on_signals(server):
            if ready_file is not None:
                ready = {
                    "pid": os.getpid(),
                    "host": host,
                    "port": server.port,
                    "release_id": slot.release_id,
                }
                atomic_write_text(ready_file, json.dumps(ready) + "\n")
            logger.info(
                "serving %s %s (%s) on http://%s:%d",
                slot.component,
                slot.version,
                slot.release_id,
                host,
                server.port,
            )
            server.serve_forever()
    finally:
        server.server_close()
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
    logger.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgeota.runtime.server",
        description="Serve the model installed in an edgeota slot over a local HTTP API.",
    )
    parser.add_argument("--slot-dir", type=Path, required=True, help="the installed slot")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument(
        "--ready-file", type=Path, help="write pid and port here as JSON once listening"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        serve(args.slot_dir, args.host, args.port, args.ready_file)
    except EdgeotaError as e:
        print(f"edgeota runtime: cannot serve slot {args.slot_dir}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(
            f"edgeota runtime: cannot serve slot {args.slot_dir} on {args.host}:{args.port}: {e}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
