"""Regenerate docs/classify.png: the Classify page with a result and its Grad-CAM overlay, in a real browser.

    python3 scripts/screenshot.py [--image FILE] [--out docs/classify.png] [--width 1280] [--weights DIR]

Starts ``streamlit run app.py`` (headless, on a free port of 127.0.0.1), opens the Classify page in Debian's
chromium driven by Playwright (as ``tests/e2e/test_browser.py`` does), uploads one image, waits until the
result, the bar chart and the Grad-CAM panels have loaded, and saves the page from its top to the heatmap's
colour scale as a PNG (device scale 1; reduced to a 256-colour palette if it would exceed ``--max-kb``). The
server is stopped afterwards.

Needs: ``python3 -m pip install -r requirements-dev.txt`` (Playwright), ``bash scripts/install_browser.sh``
(/usr/bin/chromium), and the served LiteRT copy ``weights/model.tflite`` (``make app`` or
``python3 -m skin_model.cli.lite --weights weights``). The default image, ISIC_0024372 (actinic keratosis), is
in the shipped model's test split, so the picture shows the model on an image it was not trained on.
The page's first result takes about a second on an idle machine, longer when a training run shares the cores.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from skin_model import config  # noqa: E402  (paths and environment variables only; no TensorFlow)
from skin_model.serving.app_process import start_app  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DEFAULT_IMAGE = "ISIC_0024372.jpg"
DEFAULT_OUT = PROJECT_ROOT / "docs" / "classify.png"
START_TIMEOUT_S = 180
#: Upper bound on the first result and overlay, generous for a machine busy with a training run.
RESULT_TIMEOUT_MS = 600_000
#: Streamlit scrolls inside its own container, so a tall viewport is what lays out the whole page.
TALL_VIEWPORT = 3200
MARGIN_PX = 24


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", type=Path, default=config.samples_dir() / DEFAULT_IMAGE,
                   help="image to upload (default: %(default)s)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG to write (default: docs/classify.png)")
    p.add_argument("--width", type=int, default=1280, help="browser viewport width in pixels (default 1280)")
    p.add_argument("--weights", type=Path, default=config.served_weights_dir(),
                   help="model bundle to serve (default: %(default)s; env SKIN_WEIGHTS_DIR)")
    p.add_argument("--max-kb", type=int, default=400,
                   help="above this size the PNG is reduced to a 256-colour palette (default 400)")
    return p.parse_args(argv)


def capture(url: str, image: Path, width: int) -> bytes:
    """The Classify page with ``image`` uploaded, from the top to the Grad-CAM colour scale, as PNG bytes."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": width, "height": 900}, device_scale_factor=1,
                                          color_scheme="light")
            page = context.new_page()
            page.goto(url, wait_until="commit", timeout=RESULT_TIMEOUT_MS)
            page.get_by_text("Classify a skin lesion").wait_for(timeout=RESULT_TIMEOUT_MS)
            page.locator("input[type=file]").first.set_input_files(str(image))
            page.get_by_text("Calibrated probability").first.wait_for(timeout=RESULT_TIMEOUT_MS)
            page.get_by_text("Overlay (opacity").wait_for(timeout=RESULT_TIMEOUT_MS)
            legend = page.get_by_text("blue = low attention")
            legend.wait_for(timeout=RESULT_TIMEOUT_MS)
            # Every image (upload, model view, overlay, heatmap) has loaded, and the bar chart is drawn.
            page.wait_for_function(
                "() => [...document.images].filter(i => i.src.includes('/media/')).length >= 4 && "
                "[...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout=RESULT_TIMEOUT_MS)
            page.wait_for_selector(".js-plotly-plot", timeout=RESULT_TIMEOUT_MS)
            page.set_viewport_size({"width": width, "height": TALL_VIEWPORT})
            page.wait_for_timeout(2000)  # the charts redraw after the resize
            box = legend.bounding_box()
            if box is None:
                raise RuntimeError("the Grad-CAM colour scale is not on the page")
            bottom = min(TALL_VIEWPORT, int(box["y"] + box["height"]) + MARGIN_PX)
            return page.screenshot(clip={"x": 0, "y": 0, "width": width, "height": bottom})
        finally:
            browser.close()


def shrink(png: bytes, max_kb: int) -> bytes:
    """The PNG as it is when small enough, else reduced to a 256-colour palette (still a PNG)."""
    if len(png) <= max_kb * 1000:
        return png
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        out = io.BytesIO()
        palette.save(out, format="PNG", optimize=True)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is missing: run `bash scripts/install_browser.sh`", file=sys.stderr)
        return 2
    if not args.image.is_file():
        print(f"{args.image}: no such image (give one with --image)", file=sys.stderr)
        return 2
    if not (args.weights / "model.tflite").is_file():
        print(f"{args.weights}/model.tflite is missing: run `python3 -m skin_model.cli.lite --weights "
              f"{args.weights}`", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", prefix="screenshot-server-", suffix=".log", delete=False) as log_file:
        server = None
        try:
            server = start_app(args.weights, START_TIMEOUT_S, log_file)
            png = capture(server.url, args.image.resolve(), args.width)
        except Exception:
            print(f"failed; the server's log is {log_file.name}", file=sys.stderr)
            raise
        finally:
            if server is not None:
                server.stop()
    os.unlink(log_file.name)
    png = shrink(png, args.max_kb)
    args.out.write_bytes(png)
    print(f"{args.out}: {len(png) / 1000:.0f} kB, {args.image.name} on the Classify page")
    return 0


if __name__ == "__main__":
    sys.exit(main())
