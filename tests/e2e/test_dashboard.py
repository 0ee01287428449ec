"""The dashboard in headless Chromium (Debian's ``chromium``, driven by Playwright).

A real server process is seeded through the API (devices, releases with variants, a rollout
that halts on a bad canary, feedback, an uploaded log); the browser logs in, opens every
page, checks what a person would check, and keeps a screenshot of each page in
``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from seeding import Seeded, enroll
from support import skip_or_fail

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
TIMEOUT_MS = 20_000


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        skip_or_fail(f"{CHROMIUM} is missing; apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed; pip install playwright")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_operator_logs_in_and_checks_every_page(seeded: Seeded, browser: Any) -> None:
    from playwright.sync_api import expect

    s = seeded
    # The test CA is not the system's: the browser is told to accept it for this server.
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # Log in: any page sends an anonymous visitor to the login form, then back.
    page.goto(f"{s.server.url}/ui/fleet")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/fleet$"))
    page.get_by_label("Admin token").fill("eoa_wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown or revoked")
    shot(page, "01-login")
    page.get_by_label("Admin token").fill(s.token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/ui/fleet$"))
    cookie = next(c for c in context.cookies() if c["name"] == "edgeota_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert s.token not in cookie["value"]

    # Fleet overview: counts, the halted rollout, the failure.
    expect(page.locator("#devices-active")).to_have_text("4")
    counts = page.locator("#component-denoiser")
    expect(counts.locator("tbody tr", has_text="1.0.0")).to_contain_text("4")
    expect(page.locator("#recent-failures")).to_contain_text("rolled_back")
    expect(page.locator("#recent-failures")).to_contain_text("max_abs_error 0.71")
    expect(page.locator(".rollout-card").first).to_contain_text("Halted")
    shot(page, "02-fleet")

    # It updates without a reload: a device enrolls meanwhile.
    page.evaluate("window.stillTheSamePage = true")
    enroll(s.server, "camera-5")
    expect(page.locator("#devices-active")).to_have_text("5", timeout=TIMEOUT_MS)
    assert page.evaluate("window.stillTheSamePage") is True

    # Devices and one device's timeline and log.
    page.get_by_role("link", name="Devices", exact=True).click()
    expect(page.locator("#device-list tbody tr")).to_have_count(5)
    shot(page, "03-devices")
    page.get_by_role("link", name="camera-1", exact=True).click()
    timeline = page.locator("#timeline")
    expect(timeline.locator("li").first).to_contain_text("rolled_back")
    expect(timeline).to_contain_text("health check: max_abs_error 0.71 above 0.25")
    expect(timeline).to_contain_text("update_found")
    expect(page.locator("#logs")).to_contain_text("Log after rolled_back")
    expect(page.get_by_text("choppy output after the update")).to_be_visible()
    shot(page, "04-device")
    page.locator("#logs a").first.click()
    expect(page.locator("pre.log")).to_contain_text("probe: max_abs_error 0.71 above 0.25")
    shot(page, "05-device-log")

    # Releases, their variants, and feedback.
    page.get_by_role("link", name="Releases", exact=True).click()
    row = page.locator("#release-list tbody tr", has_text="denoiser 2.0.0")
    expect(row).to_contain_text("fp32, int8")
    expect(row).to_contain_text("1 rating")
    shot(page, "06-releases")
    row.get_by_role("link", name="denoiser 2.0.0").click()
    expect(page.locator("#files")).to_contain_text("model-int8.onnx")
    expect(page.locator("#feedback-total")).to_contain_text("1 rating, average 1.0, 100% negative")
    expect(page.locator("#comments")).to_contain_text("choppy output after the update")
    shot(page, "07-release")

    # Rollouts: the halt and why, per-phase progress; then the operator resumes it.
    page.get_by_role("link", name="Rollouts", exact=True).click()
    card = page.locator(f"#rollout-{s.rollout['id']}")
    expect(card).to_contain_text("halted")
    expect(card).to_contain_text("field-test")
    expect(card.locator(".bar").first).to_be_visible()
    shot(page, "08-rollouts")
    card.get_by_role("link", name=f"Rollout {s.rollout['id']}").click()
    expect(page.locator("#halt-reason")).to_contain_text("Halted")
    expect(page.locator("#halt-reason")).to_contain_text(s.rollout["halt_reason"])
    expect(page.locator("#phases")).to_contain_text("0/1 updated, 1 failed")
    shot(page, "09-rollout-halted")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#rollout-status")).to_contain_text("running")
    expect(page.locator("#halt-reason")).to_contain_text("Last halt")
    # Only the commands a running rollout takes are offered now.
    expect(page.locator(".actions button")).to_have_text(["Pause", "Abort", "Rollback"])
    shot(page, "10-rollout-resumed")

    # The audit trail has the operator's resume and the loop's halt.
    page.get_by_role("link", name="Audit", exact=True).click()
    audit = page.locator("#audit")
    expect(audit.locator("tr", has_text="rollout.resume")).to_contain_text("admin:first")
    expect(audit.locator("tr", has_text="rollout.halted")).to_contain_text("rollout-loop")
    expect(audit).to_contain_text("dashboard.login")
    shot(page, "11-audit")

    # Log out: the pages ask for a login again.
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    page.goto(f"{s.server.url}/ui/rollouts")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    assert errors == []
    context.close()


def test_forms_without_the_sessions_csrf_token_are_refused(seeded: Seeded) -> None:
    s = seeded
    with httpx.Client(base_url=s.server.url, verify=s.server.ssl_context()) as client:
        login = client.get("/ui/login")
        token = re.search(r'name="login_token" value="([^"]+)"', login.text)
        assert token is not None
        r = client.post("/ui/login", data={"token": s.token, "login_token": "forged"})
        assert r.status_code == 303 and "error=expired" in r.headers["location"]
        r = client.post("/ui/login", data={"token": s.token, "login_token": token.group(1)})
        assert r.status_code == 303 and r.headers["location"] == "/ui/fleet"
        url = f"/ui/rollouts/{s.rollout['id']}/abort"
        assert client.post(url, data={"csrf": "forged"}).status_code == 403
        assert client.post(url, data={}).status_code == 403
        assert s.server.admin.rollout(s.rollout["id"])["status"] == "halted"
        assert client.get("/ui/fleet").status_code == 200  # the session itself works
    # Without the cookie, not even an admin token opens a page: it is no session.
    anonymous = httpx.get(
        f"{s.server.url}/ui/fleet",
        headers={"Authorization": f"Bearer {s.token}"},
        verify=s.server.ssl_context(),
    )
    assert anonymous.status_code == 303
