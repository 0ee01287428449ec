"""The dashboard: server-rendered pages under ``/ui`` for operators.

Pages are Jinja2 templates (``server/templates``) with plain CSS and one small script
(``server/static``), no build step and no assets from elsewhere. Each page keeps its
changing part in a ``live`` block; the script fetches the page again every few seconds with
``X-Live: 1`` and the server answers with that block alone, so pages update without a
reload. Mostly read-only: the forms are log in, log out, and the rollout commands, each a
POST with a CSRF token (see ``dashboard_auth``).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from edgeota.rollout import ALLOWED_FROM, Command, RolloutStatus
from edgeota.server import dashboard_auth as auth
from edgeota.server import dashboard_data as data
from edgeota.server.deps import ContextDep, SessionDep
from edgeota.server.services import audit, device_logs, rollouts
from edgeota.server.services.errors import ServiceError
from edgeota.timeutil import as_utc, utcnow

router = APIRouter(prefix="/ui", include_in_schema=False)

LIVE_HEADER = "x-live"
_FORM_BYTES = 8192


@functools.cache
def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("edgeota.server", "templates"),
        autoescape=select_autoescape(("html",)),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["ago"] = _ago
    env.filters["size"] = _size
    env.filters["pct"] = lambda part, whole: 0 if not whole else round(100 * part / whole, 1)
    return env


def _when(value: datetime | None) -> str:
    return "never" if value is None else as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    seconds = int((utcnow() - as_utc(value)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{max(seconds, 0)} s ago"


def _size(n: int | None) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _render(request: Request, name: str, **context: Any) -> HTMLResponse:
    template = templates().get_template(name)
    context = {"request": request, "path": request.url.path, **context}
    if request.headers.get(LIVE_HEADER) == "1" and "live" in template.blocks:
        body = "".join(template.blocks["live"](template.new_context(context)))
    else:
        body = template.render(context)
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


def _current(request: Request, session: SessionDep, ctx: ContextDep) -> auth.DashboardSession:
    found = auth.read_session(session, ctx.session_key, request.cookies.get(auth.SESSION_COOKIE))
    if found is None:
        if request.headers.get(LIVE_HEADER) == "1":
            raise HTTPException(401, "log in again")
        target = quote(request.url.path, safe="/")
        raise HTTPException(303, "log in first", headers={"Location": f"/ui/login?next={target}"})
    return found


CurrentDep = Annotated[auth.DashboardSession, Depends(_current)]


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _FORM_BYTES:
        raise HTTPException(413, "form too large")
    parsed = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=16)
    return {k: v[0] for k, v in parsed.items()}


def _safe_next(target: str | None) -> str:
    """Only pages of this dashboard: never an open redirect."""
    if target and target.startswith("/ui/") and "//" not in target and "\\" not in target:
        return target
    return "/ui/fleet"


# -- log in and out ------------------------------------------------------------------------
@router.get("", response_class=RedirectResponse)
def home() -> RedirectResponse:
    return RedirectResponse("/ui/fleet", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, ctx: ContextDep, error: str | None = None) -> HTMLResponse:
    token, cookie = auth.new_login_token(ctx.session_key)
    page = _render(
        request,
        "login.html",
        static_page=True,
        login_token=token,
        next=_safe_next(request.query_params.get("next")),
        error=error,
    )
    _set_cookie(request, page, auth.LOGIN_COOKIE, cookie, auth.LOGIN_MAX_AGE_S)
    return page


@router.post("/login", response_class=RedirectResponse)
async def login(request: Request, session: SessionDep, ctx: ContextDep) -> Response:
    form = await _form(request)
    if not auth.login_token_ok(
        ctx.session_key, request.cookies.get(auth.LOGIN_COOKIE), form.get("login_token", "")
    ):
        return RedirectResponse("/ui/login?error=expired", status_code=303)
    admin = await run_in_threadpool(auth.login, session, form.get("token", ""))
    if admin is None:
        return RedirectResponse("/ui/login?error=token", status_code=303)
    await run_in_threadpool(
        audit.record, session, f"admin:{admin.name}", "dashboard.login", "admin_token", admin.name
    )
    max_age = ctx.settings.session_max_age_s
    response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    cookie = auth.new_session_cookie(ctx.session_key, admin, max_age)
    _set_cookie(request, response, auth.SESSION_COOKIE, cookie, max_age)
    response.delete_cookie(auth.LOGIN_COOKIE, path="/ui")
    return response


@router.post("/logout", response_class=RedirectResponse)
async def logout(request: Request, current: CurrentDep) -> Response:
    form = await _form(request)
    if not auth.csrf_ok(current, form.get("csrf", "")):
        raise HTTPException(403, "stale form: reload the page and try again")
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/ui")
    return response


def _set_cookie(request: Request, response: Response, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


# -- pages ---------------------------------------------------------------------------------
@router.get("/fleet", response_class=HTMLResponse)
def fleet_page(request: Request, current: CurrentDep, session: SessionDep) -> HTMLResponse:
    return _render(request, "fleet.html", me=current, **data.fleet(session))


@router.get("/devices", response_class=HTMLResponse)
def devices_page(request: Request, current: CurrentDep, session: SessionDep) -> HTMLResponse:
    shown = data.device_list(session)
    return _render(request, "devices.html", me=current, devices=shown, cap=data.DEVICES_SHOWN)


@router.get("/devices/{device_id}", response_class=HTMLResponse)
def device_page(
    device_id: str, request: Request, current: CurrentDep, session: SessionDep
) -> HTMLResponse:
    return _render(request, "device.html", me=current, **data.device_page(session, device_id))


@router.get("/logs/{log_id}", response_class=HTMLResponse)
def log_page(log_id: int, request: Request, current: CurrentDep, session: SessionDep) -> Response:
    row = device_logs.get(session, log_id)
    if request.query_params.get("raw") == "1":
        return PlainTextResponse(row.text)
    log = device_logs.to_public(row)
    return _render(request, "log.html", me=current, log=log, text=row.text, static_page=True)


@router.get("/releases", response_class=HTMLResponse)
def releases_page(request: Request, current: CurrentDep, session: SessionDep) -> HTMLResponse:
    return _render(request, "releases.html", me=current, rows=data.release_list(session))


@router.get("/releases/{release_ref}", response_class=HTMLResponse)
def release_page(
    release_ref: str, request: Request, current: CurrentDep, session: SessionDep
) -> HTMLResponse:
    return _render(request, "release.html", me=current, **data.release_page(session, release_ref))


@router.get("/rollouts", response_class=HTMLResponse)
def rollouts_page(request: Request, current: CurrentDep, session: SessionDep) -> HTMLResponse:
    return _render(request, "rollouts.html", me=current, rollouts=data.rollout_list(session))


@router.get("/rollouts/{rollout_id}", response_class=HTMLResponse)
def rollout_page(
    rollout_id: int, request: Request, current: CurrentDep, session: SessionDep
) -> HTMLResponse:
    error = request.query_params.get("error")
    page = data.rollout_page(session, rollout_id)
    status = RolloutStatus(page["rollout"].status)
    allowed = [c for c in Command if status in ALLOWED_FROM[c]]  # buttons that can work
    return _render(request, "rollout.html", me=current, error=error, allowed=allowed, **page)


@router.post("/rollouts/{rollout_id}/{command}", response_class=RedirectResponse)
async def rollout_command(
    rollout_id: int,
    command: Command,
    request: Request,
    current: CurrentDep,
    session: SessionDep,
    ctx: ContextDep,
) -> Response:
    form = await _form(request)
    if not auth.csrf_ok(current, form.get("csrf", "")):
        raise HTTPException(403, "stale form: reload the page and try again")

    def apply() -> None:
        rollouts.command(
            session,
            rollout_id,
            command,
            utcnow(),
            store=ctx.artifacts,
            signer=ctx.signer,
            by=current.actor,
        )
        audit.record(session, current.actor, f"rollout.{command.value}", "rollout", rollout_id)

    target = f"/ui/rollouts/{rollout_id}"
    try:
        await run_in_threadpool(apply)
    except ServiceError as e:
        return RedirectResponse(f"{target}?error={quote(e.message)}", status_code=303)
    return RedirectResponse(target, status_code=303)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, current: CurrentDep, session: SessionDep) -> HTMLResponse:
    entries = audit.search(session, audit.AuditQuery(limit=200))
    return _render(request, "audit.html", me=current, entries=entries, now=datetime.now(UTC))
