"""End to end in a real browser: Debian's chromium driven by Playwright against `streamlit run app.py`.

Run with ``pytest tests/e2e``; the screenshot goes to ``test-artifacts/classify.png``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
START_TIMEOUT_S = 120
RESULT_TIMEOUT_MS = 180_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="/usr/bin/chromium is missing: run `bash scripts/install_browser.sh`")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}: {process.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer on {url} within {timeout} s")


@pytest.fixture(scope="module")
def weights_for_e2e(request) -> Path:
    from skin_model.config import DEFAULT_WEIGHTS_DIR

    if (DEFAULT_WEIGHTS_DIR / "metadata.json").is_file():
        return DEFAULT_WEIGHTS_DIR
    return request.getfixturevalue("tiny_bundle")


@pytest.fixture(scope="module")
def server(weights_for_e2e: Path):
    port = free_port()
    env = {**os.environ, "SKIN_WEIGHTS_DIR": str(weights_for_e2e), "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, START_TIMEOUT_S)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


def test_deep_link_on_a_fresh_server_keeps_navigation_and_disclaimer(server, browser):
    """Opening /report first (before any visit to the root) still runs through app.py: the page's own
    navigation, the model version and the disclaimer are there, and the report page is the one shown.
    Runs first in this module so the server has not served app.py yet."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server}/report")
    page.get_by_role("heading", name="Evaluation report").wait_for(timeout=RESULT_TIMEOUT_MS)
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_text("not a medical device").wait_for(timeout=RESULT_TIMEOUT_MS)
    assert sidebar.get_by_text("Model version:").is_visible()
    assert sidebar.get_by_text("About / model card").is_visible()
    assert sidebar.get_by_text("model card", exact=True).count() == 0, "no legacy pages/ listing"
    page.close()


def test_upload_in_browser_shows_diagnosis_and_overlay(server, browser, real_image_path, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server)
    page.get_by_text("Classify a skin lesion").wait_for(timeout=RESULT_TIMEOUT_MS)
    assert page.get_by_text("not a medical device").first.is_visible()

    # A bad file first: a clear message, and the page keeps serving.
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not really a jpeg")
    page.locator("input[type=file]").set_input_files(str(bad))
    page.get_by_text("cannot be used").wait_for(timeout=RESULT_TIMEOUT_MS)
    assert page.get_by_text("broken.jpg").first.is_visible()

    page.locator("input[type=file]").set_input_files(str(real_image_path))
    page.get_by_text("Most likely diagnosis").wait_for(timeout=RESULT_TIMEOUT_MS)
    overlay_caption = page.get_by_text("Overlay (opacity")
    overlay_caption.wait_for(timeout=RESULT_TIMEOUT_MS)
    assert page.get_by_text("Calibrated probability:").is_visible()
    page.get_by_text("blue = low attention").wait_for(timeout=RESULT_TIMEOUT_MS)
    assert page.get_by_text("cannot be used").count() == 0, "the error went away with the good upload"
    # Every image on the page (upload, model view, heatmap, overlay, legend) has actually loaded.
    page.wait_for_function("() => [...document.images].filter(i => i.src.includes('/media/')).length >= 5 && "
                           "[...document.images].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=RESULT_TIMEOUT_MS)
    page.wait_for_selector(".js-plotly-plot", timeout=RESULT_TIMEOUT_MS)
    # Streamlit scrolls inside its own container, so a tall viewport is what captures the whole page.
    page.set_viewport_size({"width": 1400, "height": 2600})
    page.wait_for_timeout(1500)  # let the plotly chart finish its first draw after the resize
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "classify.png"), full_page=True)
    assert (ARTIFACTS / "classify.png").stat().st_size > 10_000
    page.close()
