"""Signed metadata and content-addressed targets, for devices (no credentials needed:
everything here is public and verified by signatures and hashes, not by the channel)."""

from __future__ import annotations

import re

from fastapi import APIRouter
from fastapi.responses import FileResponse

from edgeota.server.deps import ContextDep
from edgeota.server.services.errors import NotFoundError

router = APIRouter(prefix="/tuf", tags=["tuf"])

_METADATA_NAME = re.compile(r"^(?:[1-9][0-9]{0,9}\.)?(?:root|targets|snapshot|timestamp)\.json$")
_TARGET_NAME = re.compile(r"^([0-9a-f]{64})\.[^/]+$")


@router.get("/metadata/{name}", response_class=FileResponse)
def metadata(name: str, ctx: ContextDep) -> FileResponse:
    path = ctx.settings.tuf_metadata_dir / name
    if not _METADATA_NAME.match(name) or not path.is_file():
        raise NotFoundError(f"no metadata file {name!r}")
    # timestamp.json (and unversioned names) change in place; versioned files never do.
    cache = "no-store" if not name[0].isdigit() else "public, max-age=31536000, immutable"
    return FileResponse(path, media_type="application/json", headers={"Cache-Control": cache})


@router.get("/targets/{target_path:path}", response_class=FileResponse)
def target(target_path: str, ctx: ContextDep) -> FileResponse:
    """A target by its consistent-snapshot name ``<dir>/<sha256>.<name>``."""
    match = _TARGET_NAME.match(target_path.rsplit("/", 1)[-1])
    if match is None or not ctx.artifacts.exists(match.group(1)):
        raise NotFoundError(f"no target {target_path!r}")
    sha256 = match.group(1)
    return FileResponse(
        ctx.artifacts.path_for(sha256),
        media_type="application/octet-stream",
        headers={"ETag": f'"{sha256}"', "Cache-Control": "public, max-age=31536000, immutable"},
    )
