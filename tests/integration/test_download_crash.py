"""kill -9 in the middle of a download, for real: the next run resumes with Range/If-Range.

The file server is Starlette's FileResponse under uvicorn (Range, If-Range and ETag as a
CDN or the artifact store serves them); the downloads run in child processes that SIGKILL
themselves after an exact byte count (the agent's ``crash_after_bytes`` fault plan).
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

from edgeota.agent.download import Downloader, DownloadLimits
from edgeota.targets import TargetCustom, VerifiedTarget

pytestmark = pytest.mark.integration

SIZE = 3 * 1024 * 1024

CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import httpx
    from edgeota.agent.download import Downloader, DownloadLimits
    from edgeota.targets import TargetCustom, VerifiedTarget

    spec = json.loads(sys.argv[1])
    custom = TargetCustom("c", "1.0.0", "rel-1", "model", "model.bin")
    target = VerifiedTarget("c/1.0.0/model.bin", spec["length"], spec["sha256"], custom,
                            spec["url"])
    limits = DownloadLimits(crash_after_bytes=spec["crash_after_bytes"])
    with httpx.Client() as client:
        Downloader(client, Path(spec["dir"]), limits).fetch(target)
    sys.exit(0)  # not reached when the crash fires
    """
)


@dataclass
class Served:
    url: str
    data: bytes
    ranges: list[str | None] = field(default_factory=list)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    data = random.Random(3).randbytes(SIZE)
    sha = hashlib.sha256(data).hexdigest()
    blob = tmp_path / "store" / f"{sha}.model.bin"
    blob.parent.mkdir()
    blob.write_bytes(data)
    log: list[str | None] = []

    async def serve(request: Request) -> FileResponse:
        log.append(request.headers.get("range"))
        return FileResponse(blob)

    app = Starlette(routes=[Route(f"/tuf/targets/c/1.0.0/{sha}.model.bin", serve)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # listening before the server thread runs: no start-up race
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/tuf/targets/c/1.0.0/{sha}.model.bin"
    s = Served(url, data)
    s.ranges = log
    yield s
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def spec(served: Served, downloads: Path, crash_after: int) -> dict[str, Any]:
    return {
        "url": served.url,
        "length": len(served.data),
        "sha256": hashlib.sha256(served.data).hexdigest(),
        "dir": str(downloads),
        "crash_after_bytes": crash_after,
    }


def run_child(served: Served, downloads: Path, crash_after: int) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec(served, downloads, crash_after))],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.decode()
    return proc.returncode


def test_kill_9_at_random_byte_counts_then_resume(served: Served, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    sha = hashlib.sha256(served.data).hexdigest()
    partial = downloads / f"{sha}.partial"
    # Each child resumes what the previous one left, then is killed further on.
    offsets = sorted(random.Random(11).sample(range(1, SIZE), 4))
    for before, crash_after in zip([0, *offsets], offsets, strict=False):
        assert run_child(served, downloads, crash_after - before) == -signal.SIGKILL
        # written and fsynced right up to the crash point, not a byte more or less
        assert partial.stat().st_size == crash_after
        assert partial.read_bytes() == served.data[:crash_after]
    custom = TargetCustom("c", "1.0.0", "rel-1", "model", "model.bin")
    target = VerifiedTarget("c/1.0.0/model.bin", SIZE, sha, custom, served.url)
    with httpx.Client() as client:
        final = Downloader(client, downloads, DownloadLimits()).fetch(target)
    assert final.read_bytes() == served.data
    assert sorted(p.name for p in downloads.iterdir()) == [sha]
    assert served.ranges == [None, *(f"bytes={n}-" for n in offsets)]
