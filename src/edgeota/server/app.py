"""The FastAPI app, built by ``create_app`` from settings (nothing happens at import time)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from edgeota import __version__
from edgeota.errors import InsufficientSpaceError, VerificationError
from edgeota.server import delta_builder, monitoring_setup, rollout_loop, sim_gate
from edgeota.server.artifacts import ArtifactStore, ArtifactTooLargeError
from edgeota.server.background import every
from edgeota.server.context import AppContext
from edgeota.server.db import make_engine, make_sessionmaker, session_scope
from edgeota.server.metrics import MetricsMiddleware
from edgeota.server.routers import (
    dashboard,
    devices,
    feedback,
    groups,
    metrics,
    monitoring,
    notices,
    releases,
    rollouts,
    tokens,
    tuf,
)
from edgeota.server.schemas import ServerInfo
from edgeota.server.services import devices as device_service
from edgeota.server.services import retire
from edgeota.server.services.errors import ServiceError, UnauthorizedError
from edgeota.server.settings import ServerSettings
from edgeota.server.signer import RepositorySigner, open_signer
from edgeota.server.sim_gate import GateRunner
from edgeota.timeutil import utcnow

log = logging.getLogger(__name__)

GATE_STOP_TIMEOUT_S = 30.0  # how long shutdown waits for simulated-environment gates to end


def create_app(
    settings: ServerSettings,
    signer: RepositorySigner | None = None,
    gate_runner: GateRunner | None = None,
) -> FastAPI:
    """Build the app for an already prepared data dir (see ``bootstrap.prepare``).

    ``gate_runner`` runs rollouts' simulated-environment gates (default: the fleet
    simulator's, edgeota.sim.gate).
    """
    engine = make_engine(settings.resolved_database_url)
    repo = open_signer(settings) if signer is None else signer
    if gate_runner is None:
        from edgeota.sim.gate import SimGateRunner

        gate_runner = SimGateRunner()
    ctx = AppContext(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        artifacts=ArtifactStore(settings.artifacts_dir),
        signer=repo,
        clock=settings.clock(),
        gate_runner=gate_runner,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.stopping.clear()
        ctx.db_admission.bind()
        stop_notices = monitoring_setup.start(ctx)
        tasks = [
            asyncio.create_task(
                every(settings.last_seen_flush_interval_s, lambda: _flush_last_seen(ctx))
            ),
            asyncio.create_task(every(settings.tuf_refresh_interval_s, lambda: _refresh(ctx))),
            asyncio.create_task(
                every(
                    settings.rollout_interval_s,
                    lambda: rollout_loop.run_due(ctx.sessions, ctx.clock),
                )
            ),
            asyncio.create_task(every(settings.rollout_interval_s, lambda: sim_gate.run_due(ctx))),
            # One pass at a time per process, in a worker thread: building patches is
            # CPU-heavy and must not stall the event loop (the check-in path).
            asyncio.create_task(every(settings.delta_interval_s, lambda: _build_deltas(ctx))),
        ]
        if settings.release_keep is not None:
            tasks.append(
                asyncio.create_task(
                    every(settings.release_prune_interval_s, lambda: _prune_releases(ctx))
                )
            )
        await asyncio.to_thread(_refresh, ctx)
        try:
            yield
        finally:
            stop_notices()
            ctx.stopping.set()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            still = await asyncio.to_thread(sim_gate.wait_for_runs, ctx, GATE_STOP_TIMEOUT_S)
            if still:
                log.warning("shutting down while gate runs go on: %s", ", ".join(still))
            await asyncio.to_thread(_flush_last_seen, ctx)
            engine.dispose()

    app = FastAPI(
        title="edgeota",
        version=__version__,
        summary="Over-the-air updates for generative AI models on edge devices",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    monitoring_setup.prepare(ctx)
    app.add_middleware(MetricsMiddleware, metrics=ctx.metrics)
    app.mount("/ui/static", StaticFiles(packages=[("edgeota.server", "static")]), name="static")
    for router in (
        dashboard.router,
        devices.router,
        feedback.router,
        groups.router,
        metrics.router,
        monitoring.router,
        notices.router,
        releases.router,
        rollouts.router,
        tokens.router,
        tuf.router,
    ):
        app.include_router(router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/api/v1/server-info", response_model=ServerInfo, tags=["health"])
    def server_info(request: Request) -> ServerInfo:
        base = str(request.base_url).rstrip("/")
        return ServerInfo(
            version=__version__,
            root_url=f"{base}/tuf/metadata/1.root.json",
            metadata_url=f"{base}/tuf/metadata/",
            targets_url=f"{base}/tuf/targets/",
        )

    _install_error_handlers(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, UnauthorizedError) else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(ArtifactTooLargeError)
    async def too_large(_: Request, exc: ArtifactTooLargeError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    @app.exception_handler(VerificationError)
    async def bad_upload(_: Request, exc: VerificationError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(InsufficientSpaceError)
    async def no_space(_: Request, exc: InsufficientSpaceError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=507)


def _flush_last_seen(ctx: AppContext) -> None:
    pending = ctx.last_seen.drain()
    if pending:
        with session_scope(ctx.sessions) as session:
            device_service.flush_last_seen(session, pending)


def _build_deltas(ctx: AppContext) -> None:
    s = ctx.settings
    config = delta_builder.BuildConfig(
        claim_timeout_s=s.delta_claim_timeout_s, max_ratio=s.delta_max_ratio
    )
    delta_builder.run_pending(ctx.sessions, ctx.artifacts, ctx.signer, config, utcnow, ctx.stopping)


def _prune_releases(ctx: AppContext) -> None:
    keep = ctx.settings.release_keep
    assert keep is not None
    with session_scope(ctx.sessions) as session:
        result = retire.prune(session, keep, ctx.signer, ctx.artifacts)
        retire.record_pruned(session, retire.PRUNE_ACTOR, result)
    if result.retired:
        log.info(
            "retired %d release(s) older than the newest %d: %s (%d files deleted)",
            len(result.retired),
            keep,
            ", ".join(f"{r.component} {r.version}" for r in result.retired),
            result.files_deleted,
        )


def _refresh(ctx: AppContext) -> None:
    roles = ctx.signer.refresh_expiring()
    if roles:
        log.info("re-signed expiring TUF metadata: %s", ", ".join(roles))
