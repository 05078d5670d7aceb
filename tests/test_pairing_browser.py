"""Pairing a tablet in headless Chromium against a real edge (uvicorn, Mosquitto): the
one-time link, its cookie, a second browser refused, and the typed code."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, expect

from edge.devices import create_pairing_code
from edge.devtools import MqttProbe
from edge.pairing_codes import format_code
from tests.edge_env import EdgeEnv, edge_fixtures

# The Playwright driver, browser and MQTT probe of the tablet page's tests, and its helpers.
from tests.test_tablet_browser import CHROMIUM, TABLET, browser, card, check_in, probe, pw

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")
__all__ = ["browser", "probe", "pw"]  # fixtures used by name

env, edge = edge_fixtures(n_products=80, n_members=6)


def expect_online(page: Page) -> None:
    expect(page.locator("#conn")).to_have_attribute("data-state", "online", timeout=5_000)


def test_the_link_pairs_one_browser_which_then_shows_live_customers(
    edge, env: EdgeEnv, probe: MqttProbe, browser: Browser
) -> None:
    first_subject, second_subject = env.seed.subjects[:2]
    code = create_pairing_code(env.settings.db_path, "Tablet 1", 600)
    link = f"{edge.url}/tablet/pair?code={code}"
    context = browser.new_context(viewport=TABLET)
    try:
        page = context.new_page()
        page.goto(link)
        assert page.url == f"{edge.url}/tablet"  # the code left the address bar
        expect_online(page)
        check_in(env, probe, first_subject)
        expect(card(page, first_subject)).to_be_visible(timeout=5_000)
        (cookie,) = [c for c in context.cookies()
                     if c["name"] == env.settings.tablet.cookie_name]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert cookie["value"].startswith("sst_") and code not in cookie["value"]
        assert page.evaluate("document.cookie") == ""  # no script can read the token
    finally:
        context.close()  # an open live feed would hold up the edge's shutdown

    context = browser.new_context(viewport=TABLET)
    try:
        page = context.new_page()
        response = page.goto(link)  # the same link in a fresh browser: refused
        assert response is not None and response.status == 410
        expect(page.locator(".pair-msg")).to_contain_text("already used")
        assert page.evaluate("fetch('/v1/visits').then(r => r.status)") == 401
        assert context.cookies() == []
        # staff type a new code on the pairing page (any case, with or without the dash)
        fresh = create_pairing_code(env.settings.db_path, "Tablet 2", 600)
        page.fill("#pair-code", format_code(fresh).lower())
        page.click(".pair-form button")
        expect(page).to_have_url(f"{edge.url}/tablet")
        expect_online(page)
        check_in(env, probe, second_subject)
        expect(card(page, second_subject)).to_be_visible(timeout=5_000)
        expect(card(page, first_subject)).to_be_visible()
    finally:
        context.close()
