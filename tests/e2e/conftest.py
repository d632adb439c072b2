"""Browser tests: real Chromium (Debian's) driven by Playwright against a live uvicorn server.

They run on SQLite only: the page behaviour does not depend on the database, and the store tests
already cover both backends. Screenshots go to test-artifacts/ (gitignored).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PHONE = {"width": 360, "height": 780}
DESKTOP = {"width": 1280, "height": 860}


@pytest.fixture
def db_url(sqlite_template, tmp_path):
    """Overrides the root fixture: SQLite only for browser tests."""
    path = tmp_path / "zaima.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


async def screenshot_both(browser, url: str, name: str, directory: Path) -> None:
    """Full-page screenshots of one URL at phone and desktop width: phone-<name>.png, desktop-<name>.png."""
    for label, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        context = await browser.new_context(viewport=viewport, locale="zh-CN", device_scale_factor=1)
        page = await context.new_page()
        await page.goto(url)
        await page.wait_for_load_state("networkidle")
        assert await page.evaluate("document.documentElement.scrollWidth") <= viewport["width"], \
            f"{name} overflows horizontally at {viewport['width']} px"
        await page.screenshot(path=str(directory / f"{label}-{name}.png"), full_page=True)
        await context.close()


async def open_chat_from_order_page(browser, live_server, order, page_html=None, **context_options):
    """A customer on a phone opens their order page and taps 「联系客服」: (context, page, widget panel).
    `context_options` for the browser context (e.g. color_scheme); `page_html` rewrites the page's HTML."""
    from zaima.core.signing import order_access_token

    context = await browser.new_context(viewport=PHONE, locale="zh-CN", **context_options)
    page = await context.new_page()
    token = order_access_token(live_server.settings.secret_key, order.order_no)
    url = f"{live_server.url}/orders/{order.order_no}?t={token}"
    if page_html is not None:
        async def rewrite(route):
            response = await route.fetch()
            await route.fulfill(response=response, body=page_html(await response.text()))

        await page.route(url, rewrite)
    await page.goto(url)
    await page.locator("[data-testid=contact-support]").click()
    return context, page, page.locator("[data-testid=widget-panel]")


async def widget_say(panel, text: str) -> None:
    """The customer types `text` into the chat widget and taps send."""
    await panel.locator("[data-testid=widget-input]").fill(text)
    await panel.locator("[data-testid=widget-send]").click()


async def console_login(browser, base: str, username: str, password: str):
    """An agent at a desktop logs into the console: (context, page) on /console."""
    import re

    context = await browser.new_context(viewport=DESKTOP, locale="zh-CN")
    page = await context.new_page()
    await page.goto(base + "/console")
    await page.wait_for_url(re.compile("/console/login"))
    await page.get_by_label("用户名").fill(username)
    await page.get_by_label("密码").fill(password)
    await page.get_by_role("button", name="登录").click()
    await page.wait_for_url(re.compile("/console$"))
    return context, page
