"""``GET /metrics``: the Prometheus exposition of the server (``edgeota.server.metrics``)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgeota.server.deps import AdminDep, ContextDep

router = APIRouter(tags=["monitoring"])


@router.get("/metrics", response_class=Response)
def metrics(_: AdminDep, ctx: ContextDep) -> Response:
    """Fleet and traffic figures. Needs an admin token: the fleet figures name releases and
    versions (Prometheus: ``authorization: {credentials_file: <token file>}``)."""
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
