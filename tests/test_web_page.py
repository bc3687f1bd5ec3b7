"""The web page in a real browser: Debian's Chromium driven by Playwright against uvicorn on loopback.

The server runs the tiny smoke encoder over the generated demo catalog in Milvus Lite. The test uploads a product's
photo through the page's file input, runs the search, and checks the rendered grid. It saves a screenshot
(`MMSEARCH_SCREENSHOT_DIR`, default the test's tmp dir). Chromium is found at /usr/bin/chromium (or on PATH); as
root with apt-get it is installed; otherwise the test skips and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from api_support import index_demo_catalog, running_server

from mmsearch.api.app import create_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
QUERY_ASIN = "B0LEOPCASE1"


def find_or_install_chromium() -> str:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            "no Chromium at /usr/bin/chromium and not root with apt-get to install it (apt-get install chromium)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=300, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"],
            check=True,
            env=env,
            timeout=600,
            capture_output=True,
        )
    except (subprocess.SubprocessError, OSError) as err:
        pytest.skip(f"Chromium is not installed and `apt-get install chromium` failed: {err}")
    if not Path("/usr/bin/chromium").is_file():
        pytest.skip("`apt-get install chromium` ran but /usr/bin/chromium is still missing")
    return "/usr/bin/chromium"


@pytest.fixture(scope="module")
def chromium_path() -> str:
    pytest.importorskip("playwright.sync_api", reason="the Python playwright package is not installed")
    return find_or_install_chromium()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    catalog, settings = index_demo_catalog(root, smoke_cache=tmp_path_factory.getbasetemp() / "smoke-cache")
    # The real smoke pipeline: tiny random Visualized BGE and tiny random Phi-3 Vision reranker.
    with running_server(create_app(settings, with_reranker=True)) as url:
        yield url, catalog


@pytest.fixture
def page(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1320, "height": 980}, device_scale_factor=1)
            yield context.new_page()
        finally:
            browser.close()


def _screenshot_dir(tmp_path: Path) -> Path:
    out = Path(os.environ.get("MMSEARCH_SCREENSHOT_DIR", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_page_upload_and_search_renders_query_product_first(served, page, tmp_path):
    url, catalog = served
    page.goto(url + "/", wait_until="load")
    page.wait_for_selector("#health.ok", timeout=30_000)
    assert page.locator("#smoke-banner").is_visible(), (
        "the smoke banner must show when the server runs tiny models"
    )

    page.set_input_files("#image-input", str(catalog.image_path(QUERY_ASIN)))
    assert page.locator("#preview").is_visible()
    page.fill("#k", "9")
    page.click("#search-btn")
    page.wait_for_selector(".grid .card", timeout=60_000)
    page.wait_for_function(
        "() => document.querySelectorAll('.grid .card img').length > 0 && "
        "[...document.querySelectorAll('.grid .card img')].every(i => i.complete)"
    )

    cards = page.locator(".grid .card")
    assert cards.count() == 9
    assert cards.nth(0).locator("h3").inner_text() == catalog.title(QUERY_ASIN)
    assert cards.nth(0).locator(".rank").inner_text() == "#1"
    assert page.locator("#error").is_hidden()
    assert "9 results" in page.locator("#summary-text").inner_text()
    page.screenshot(path=str(_screenshot_dir(tmp_path) / "web_page_retrieved.png"), full_page=False)


def test_page_shows_server_error_message(served, page):
    url, _ = served
    page.goto(url + "/", wait_until="load")
    page.wait_for_selector("#health.ok", timeout=30_000)
    page.click("#search-btn")  # neither an image nor an instruction
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    text = page.locator("#error").inner_text()
    assert "422" in text and "invalid_query" in text
    assert "a query needs an image, an instruction, or both; got neither" in text
    assert page.locator(".grid .card").count() == 0


def test_page_rerank_shows_the_servers_status_reasons_and_moves(served, page, tmp_path):
    url, catalog = served
    page.goto(url + "/", wait_until="load")
    page.wait_for_selector("#health.ok", timeout=30_000)
    page.set_input_files("#image-input", str(catalog.query_image))
    page.fill("#instruction", "phone case with this image theme")
    page.fill("#k", "6")
    page.click("label.switch")  # what a user clicks; the checkbox itself is visually hidden
    assert page.locator("#rerank").is_checked()
    with page.expect_response(lambda r: r.url.endswith("/search"), timeout=120_000) as answer:
        page.click("#search-btn")
    body = answer.value.json()
    page.wait_for_selector("#rerank-box:not([hidden])", timeout=30_000)

    rerank = body["rerank"]
    assert page.locator("#rerank-status").inner_text().lower() == rerank["status"]
    assert page.locator("#rerank-reasons").inner_text() == (rerank["reasons"] or "(no reasons given)")
    assert page.locator("#rerank-why").inner_text() == (rerank["reason"] or "")
    titles = page.locator(".grid .card h3").all_inner_texts()
    assert titles == [h["title"] for h in body["hits"]]
    moved = [c for c in body["rank_changes"] if c["before"] != c["after"]]
    assert page.locator(".grid .card .move").count() == len(moved)
    assert f"reranked ({len(moved)} moved)" in page.locator("#summary-text").inner_text()
    page.wait_for_function("() => [...document.querySelectorAll('.grid .card img')].every(i => i.complete)")
    page.screenshot(path=str(_screenshot_dir(tmp_path) / "web_page_reranked.png"), full_page=False)
