"""Real browsers against a real cluster: Debian's Chromium driven by Playwright (never a browser
download), two `rustchat serve` processes joined through a throwaway Redis, one PostgreSQL.

Each user's page lives in a browser context of its own (its own sessionStorage, cookies and
cache, as separate browsers would have). Every page is watched: a script error or a Content
Security Policy violation fails the test that caused it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.support.client import Api
from tests.support.server import ADMIN_PASSWORD, ADMIN_USER, ServerProcess

CHROMIUM = os.environ.get("RUSTCHAT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Chromium talks to D-Bus when it finds one and aborts when that bus goes away mid-run (a daemon
# restarted by a package install, a container's bus stopping); with none to find it just logs.
NO_DBUS = {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent/rustchat-test-bus",
           "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent/rustchat-test-bus"}
PASSWORD = "web-test-password"
# A loaded 2-core machine runs two servers, Redis, PostgreSQL and Chromium at once.
expect.set_options(timeout=20_000)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/browser carries the `browser` marker (the fast loop leaves them out)."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.browser)


@dataclass
class Cluster:
    a: ServerProcess
    b: ServerProcess
    admin: Api
    team: dict
    general: dict
    users: dict[str, Api] = field(default_factory=dict)


@pytest.fixture(scope="module")
def web_servers(start_server, new_database, own_redis) -> tuple[ServerProcess, ServerProcess]:  # noqa: ANN001
    db = new_database()
    env = {
        "RUSTCHAT_REDIS_URL": own_redis.url,
        "RUSTCHAT_CLUSTER__HEARTBEAT_SECS": "1",
        # A restarted node's clients come back within a second instead of up to five.
        "RUSTCHAT_WS__RECONNECT_JITTER_SECS": "1",
    }
    a = start_server(db, env=env, name="web-a")
    b = start_server(db, env=env, name="web-b")
    return a, b


@pytest.fixture(scope="module")
async def cluster(web_servers, http: aiohttp.ClientSession) -> Cluster:  # noqa: ANN001
    a, b = web_servers
    admin = await Api(http, a.url).login(ADMIN_USER, ADMIN_PASSWORD)
    users = {}
    for name in ("alice", "bob", "carol"):
        status, body = await admin.post("/api/v1/users", {"username": name, "email": f"{name}@example.com",
                                                          "password": PASSWORD})
        assert status == 201, body
        users[name] = await Api(http, a.url).login(name, PASSWORD)
    status, team = await users["alice"].post("/api/v1/teams", {"name": "eng", "display_name": "Engineering"})
    assert status == 201, team
    for name in ("bob", "carol"):
        await users["alice"].post(f"/api/v1/teams/{team['id']}/members", {"user_id": users[name].user["id"]})
    status, general = await users["alice"].post("/api/v1/channels", {"team_id": team["id"], "name": "general",
                                                                      "display_name": "General"})
    assert status == 201, general
    for name in ("bob", "carol"):
        await users["alice"].post(f"/api/v1/channels/{general['id']}/members", {"user_id": users[name].user["id"]})
    return Cluster(a, b, admin, team, general, users)


def file_bytes(path: str | Path) -> bytes:
    return Path(path).read_bytes()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():  # noqa: ASYNC240 (once per module, before anything runs)
        pytest.fail(f"{CHROMIUM} is missing: scripts/bootstrap.sh --test installs Debian's chromium")
    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                            env={**os.environ, **NO_DBUS})
        yield instance
        await instance.close()


class Watched:
    """A page with its problems recorded: script errors, CSP violations, and every URL it asked for."""

    def __init__(self, context: BrowserContext, page: Page) -> None:
        self.context = context
        self.page = page
        self.errors: list[str] = []
        self.urls: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)
        page.on("request", lambda req: self.urls.append(req.url))
        page.on("websocket", lambda ws: self.urls.append(ws.url))

    def _console(self, msg) -> None:  # noqa: ANN001
        text = msg.text
        if "Content Security Policy" in text or "Refused to" in text:
            self.errors.append(f"csp: {text}")

    def assert_clean(self) -> None:
        assert self.errors == []


@pytest.fixture(scope="module")
async def open_page(browser: Browser) -> AsyncIterator:
    """Factory: a fresh context and page at `server`'s client, logged in as `user` (or not)."""
    opened: list[Watched] = []

    async def open_(server: ServerProcess, user: str | None = None, viewport: dict | None = None) -> Watched:
        context = await browser.new_context(viewport=viewport or DESKTOP, locale="en-GB", timezone_id="UTC")
        watched = Watched(context, await context.new_page())
        opened.append(watched)
        await watched.page.goto(server.url + "/")
        if user is not None:
            await login(watched.page, user)
        return watched

    yield open_
    for w in opened:
        await w.context.close()


async def login(page: Page, user: str, password: str = PASSWORD) -> None:
    await page.get_by_label("Username or email").fill(user)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")


def post_item(page: Page, text: str, where: str = "#post-list"):  # noqa: ANN201
    return page.locator(f"{where} li.post", has_text=text)


def unique(prefix: str) -> str:
    return f"{prefix} {secrets.token_hex(3)}"


def screenshot_dir() -> Path:
    """docs/screenshots when refreshing them (RUSTCHAT_SCREENSHOT_DIR), else the test log folder."""
    default = Path(os.environ.get("RUSTCHAT_TEST_LOG_DIR", "/tmp/rustchat-test-logs")) / "screenshots"
    path = Path(os.environ.get("RUSTCHAT_SCREENSHOT_DIR", default))
    path.mkdir(parents=True, exist_ok=True)
    return path
