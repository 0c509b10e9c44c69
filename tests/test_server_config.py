"""The shipped `.streamlit/config.toml`: local-only by default, no tracebacks for users, no file watcher, no full
garbage collection after every script run, and one upload limit that the browser, the server, the decoder and the
pages' message agree on."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from skin_model.data.imaging import MAX_FILE_BYTES, InvalidImageError, load_image

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((PROJECT_ROOT / ".streamlit" / "config.toml").read_text())


def test_binds_to_localhost_only():
    assert CONFIG["server"]["address"] == "127.0.0.1"


def test_no_error_details_in_the_browser_and_no_file_watcher():
    assert CONFIG["client"]["showErrorDetails"] in ("none", False)
    assert CONFIG["server"]["fileWatcherType"] == "none"
    assert CONFIG["server"].get("runOnSave", False) is False


def test_upload_limit_is_the_same_everywhere():
    megabytes = CONFIG["server"]["maxUploadSize"]
    browser_limit, server_limit = megabytes * 1_000_000, megabytes * 2**20  # Streamlit's two readings
    assert MAX_FILE_BYTES == min(browser_limit, server_limit)
    with pytest.raises(InvalidImageError, match=f"the limit is {megabytes} MB"):
        load_image(b"\xff\xd8" + b"\x00" * MAX_FILE_BYTES)


@pytest.mark.parametrize("page", ["pages/classify.py", "pages/batch.py"])
def test_pages_state_the_same_limit(page):
    source = (PROJECT_ROOT / page).read_text()
    assert "MAX_FILE_BYTES / 1e6:.0f} MB" in source
    assert not re.search(r"MAX_FILE_BYTES\s*//\s*2\*\*20", source), "MiB on the page, MB in the browser"


def test_no_full_garbage_collection_after_every_run():
    """Streamlit's gc.collect() after each script run cost about a quarter of the server's CPU per upload."""
    assert CONFIG["runner"]["postScriptGC"] is False
