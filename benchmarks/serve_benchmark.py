"""Serving speed: cold start, per-upload latency (prediction, Grad-CAM), memory, and a bounded load run.

    python benchmarks/serve_benchmark.py [--weights DIR] [--images N] [--load-seconds 60] [--sessions 8]

Figures (printed and written to benchmarks/results/serve.json):

* ``cold_start_library_s``: a fresh ``python`` process, from its start until the first calibrated
  prediction of a real image (``prediction``: imports, sha256 checks, LiteRT load) and until its Grad-CAM
  overlay (``overlay``: waits for TensorFlow and the Keras model, loaded in the background).
* ``cold_start_app_s``: ``streamlit run app.py`` started as a subprocess until the first uploaded image's
  diagnosis (``first_result``) and its Grad-CAM overlay (``overlay``) are on screen in Debian's chromium
  (Playwright); includes browser page load. The goal "first result <= 6 s" is read on ``first_result``.
* ``latency_ms``: server-side work per upload, in this process, on real HAM10000 originals (600x450 JPEG):
  ``predict`` = decode + preprocess + calibrated prediction (``ClassifierService.analyse``),
  ``gradcam`` / ``gradcam++`` = heatmap + colouring + overlay, ``predict_and_overlay`` = both (the page's
  default path). p50 / p95 / mean over the images, after one warm-up.
* ``rss_mb``: this process's resident memory after loading and after the latency runs.
* ``load``: N concurrent browser sessions (one chromium, N pages) uploading real images to one streamlit
  server on 127.0.0.1 for a fixed time; uploads completed, errors, per-upload wall time p50/p95 and the
  server's RSS at the start and the end.

Nothing here is a test; run it on an otherwise idle machine for meaningful numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from skin_model.config import DEFAULT_DATA_DIR, DEFAULT_WEIGHTS_DIR, display_path  # noqa: E402

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "serve.json"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
GOALS = {"predict_and_overlay_p50_ms": 150.0, "first_result_s": 6.0}
RESULT_TIMEOUT_MS = 180_000

log = logging.getLogger("serve_benchmark")


# ---------------------------------------------------------------------------------------------- helpers
def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process from /proc, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tree_rss_mb(pid: int) -> float:
    """RSS of a process plus its direct children (streamlit may fork helpers)."""
    total = rss_mb(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        for child in children.read_text().split():
            try:
                total += rss_mb(child)
            except OSError:
                pass
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(values_s: list[float]) -> dict[str, float]:
    ms = np.asarray(values_s) * 1000
    return {"n": int(ms.size), "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "mean": float(ms.mean()), "max": float(ms.max())}


def real_images(n: int) -> list[Path]:
    images = sorted((DEFAULT_DATA_DIR / "images_600x450").glob("*.jpg"))
    if not images:
        raise SystemExit(f"No HAM10000 originals in {DEFAULT_DATA_DIR / 'images_600x450'}")
    return images[:n]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------- library level
COLD_START_SNIPPET = """
import sys, time
from pathlib import Path
from skin_model.serving.service import ClassifierService
service = ClassifierService.from_dir(Path(sys.argv[1]))
analysis = service.analyse(Path(sys.argv[2]).read_bytes(), name="first.jpg")
print("PREDICTION", time.time(), flush=True)
service.explain(analysis, analysis.prediction.top_code, "gradcam").overlay(0.4)
print("OVERLAY", time.time(), flush=True)
"""


def cold_start_library(weights: Path, image: Path) -> dict[str, float]:
    """Seconds from launching a fresh process to its first prediction and to its first overlay."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.time()
    out = subprocess.run([sys.executable, "-c", COLD_START_SNIPPET, str(weights), str(image)], cwd=PROJECT_ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    marks = {line.split()[0].lower(): float(line.split()[1]) - start for line in out.stdout.splitlines()
             if line.startswith(("PREDICTION", "OVERLAY"))}
    if set(marks) != {"prediction", "overlay"}:
        raise RuntimeError(f"cold start run failed: {out.stderr[-2000:]}")
    return marks


def latency(weights: Path, images: list[Path]) -> dict:
    from skin_model.serving.service import ClassifierService

    rss_start = rss_mb()
    start = time.perf_counter()
    service = ClassifierService.from_dir(weights)
    load_s = time.perf_counter() - start
    payloads = [(p.name, p.read_bytes()) for p in images]
    # Warm-up: first compiled call and first gradient pass of each method.
    warm = service.analyse(*payloads[0][::-1])
    for method in ("gradcam", "gradcam++"):
        service.explain(warm, warm.prediction.top_code, method).overlay(0.4)
    rss_loaded = rss_mb()
    times: dict[str, list[float]] = {"predict": [], "gradcam": [], "gradcam++": [], "predict_and_overlay": []}
    for name, data in payloads:
        t0 = time.perf_counter()
        analysis = service.analyse(data, name=name)
        t1 = time.perf_counter()
        service.explain(analysis, analysis.prediction.top_code, "gradcam").overlay(0.4)
        t2 = time.perf_counter()
        service.explain(analysis, analysis.prediction.top_code, "gradcam++").overlay(0.4)
        t3 = time.perf_counter()
        times["predict"].append(t1 - t0)
        times["gradcam"].append(t2 - t1)
        times["gradcam++"].append(t3 - t2)
        times["predict_and_overlay"].append(t2 - t0)
    return {"model_load_s": load_s, "input_size": service.metadata.input_size,
            "model_version": service.metadata.version,
            "latency_ms": {k: summary(v) for k, v in times.items()},
            "rss_mb": {"before_load": rss_start, "after_load_and_warmup": rss_loaded, "after_runs": rss_mb()}}


# ---------------------------------------------------------------------------------------------- app level
class StreamlitServer:
    """``streamlit run app.py`` on 127.0.0.1 as a subprocess; stops when the block ends."""

    def __init__(self, weights: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.weights = weights
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    def __enter__(self) -> "StreamlitServer":
        env = {**os.environ, "SKIN_WEIGHTS_DIR": str(self.weights), "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(self.port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false"],
            cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2):
                    return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("streamlit did not start")

    def rss(self) -> float:
        return tree_rss_mb(self.process.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


OOD_WARNING = "does not look like a dermatoscopic image"


async def upload_and_wait(page, image: Path, timeout_ms: int = RESULT_TIMEOUT_MS,
                          on_result=None) -> bool:
    """Upload ``image`` and wait until its result and Grad-CAM overlay are on screen, or until the
    out-of-distribution warning is (which hides the result). Returns True when the image was flagged.
    ``on_result`` is called when the diagnosis (or the warning) appears, before the overlay."""
    await page.locator("input[type=file]").set_input_files(str(image))
    await page.get_by_text(f"{image.name} (", exact=False).first.wait_for(timeout=timeout_ms)
    flagged = page.get_by_text(OOD_WARNING).first
    await page.get_by_text("Calibrated probability:").first.or_(flagged).wait_for(timeout=timeout_ms)
    if on_result is not None:
        on_result()
    await page.get_by_text("Overlay (opacity").first.or_(flagged).wait_for(timeout=timeout_ms)
    await page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stSpinner\"]') && "
        "[...document.images].every(i => i.complete)", timeout=timeout_ms)
    return await flagged.is_visible()


async def _app_runs(weights: Path, images: list[Path], load_seconds: float, sessions: int) -> dict:
    from playwright.async_api import async_playwright

    result: dict = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        # Cold start: server process start -> first upload's overlay visible. The browser is already running.
        with StreamlitServer(weights) as server:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            await page.goto(server.url)
            await page.get_by_text("Classify a skin lesion").wait_for(timeout=RESULT_TIMEOUT_MS)
            marks: dict[str, float] = {}
            await upload_and_wait(page, images[0], on_result=lambda: marks.setdefault(
                "first_result", time.perf_counter() - server.started_at))
            marks["overlay"] = time.perf_counter() - server.started_at
            result["cold_start_app_s"] = marks
            await page.close()
        if load_seconds <= 0:
            await browser.close()
            return result
        # Load: a fresh server, warmed by one upload, then N sessions uploading for load_seconds.
        with StreamlitServer(weights) as server:
            warm = await browser.new_page()
            await warm.goto(server.url)
            await upload_and_wait(warm, images[0])
            await warm.close()
            rss_start = server.rss()
            pages = []
            for _ in range(sessions):
                page = await browser.new_page(viewport={"width": 1200, "height": 900})
                await page.goto(server.url)
                await page.get_by_text("Classify a skin lesion").wait_for(timeout=RESULT_TIMEOUT_MS)
                pages.append(page)
            stop_at = time.monotonic() + load_seconds
            durations: list[float] = []
            errors: list[str] = []
            flagged: list[str] = []  # uploads the OOD gate flagged (result hidden): a valid outcome

            async def session(index: int, page) -> None:
                k = index
                while time.monotonic() < stop_at:
                    image = images[k % len(images)]
                    k += sessions  # each session walks its own sequence of images
                    t0 = time.perf_counter()
                    try:
                        if await upload_and_wait(page, image, timeout_ms=60_000):
                            flagged.append(image.name)
                        if await page.locator("[data-testid='stAlertContentError']").count():
                            errors.append(f"session {index}: error shown for {image.name}")
                        elif await page.locator("[data-testid='stException']").count():
                            errors.append(f"session {index}: exception shown for {image.name}")
                        else:
                            durations.append(time.perf_counter() - t0)
                    except Exception as exc:  # noqa: BLE001 - counted and reported
                        errors.append(f"session {index}: {type(exc).__name__}: {str(exc)[:200]}")

            rss_samples: list[tuple[float, float]] = []

            async def sample_memory() -> None:
                while time.monotonic() < stop_at:
                    rss_samples.append((round(time.perf_counter() - t_start, 1), round(server.rss(), 1)))
                    await asyncio.sleep(5)

            t_start = time.perf_counter()
            cpu_start = server.cpu()
            await asyncio.gather(sample_memory(), *(session(i, page) for i, page in enumerate(pages)))
            wall = time.perf_counter() - t_start
            server_cpu = server.cpu() - cpu_start  # the rest of the 2 cores went to the browser pages
            result["load"] = {
                "sessions": sessions, "seconds": wall, "uploads_completed": len(durations),
                "uploads_per_s": len(durations) / wall, "errors": len(errors), "error_samples": errors[:5],
                "ood_flagged_uploads": len(flagged), "ood_flagged_images": sorted(set(flagged)),
                "upload_to_overlay_ms": summary(durations) if durations else None,
                "server_rss_mb": {"start": rss_start, "end": server.rss(), "samples_s_mb": rss_samples},
                "server_cpu_s": server_cpu, "server_cpu_share": server_cpu / (wall * (os.cpu_count() or 1)),
                "server_cpu_s_per_upload": server_cpu / max(len(durations), 1),
            }
            for page in pages:
                await page.close()
        await browser.close()
    return result


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR, help="model bundle to serve")
    parser.add_argument("--images", type=int, default=40, help="real HAM images for the latency runs")
    parser.add_argument("--load-seconds", type=float, default=60.0, help="0 skips the load run")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--skip-app", action="store_true", help="library-level figures only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not (args.weights / "metadata.json").is_file():
        raise SystemExit(f"No model bundle in {args.weights}: train one (python train.py) or pass --weights DIR")
    images = real_images(args.images)

    report: dict = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "load_average_at_start": os.getloadavg()},
                    "weights": display_path(args.weights), "n_images": len(images), "goals": GOALS}
    log.info("cold start (library, fresh process)...")
    report["cold_start_library_s"] = cold_start_library(args.weights, images[0])
    log.info("latency on %d images...", len(images))
    report.update(latency(args.weights, images))
    if args.skip_app or not CHROMIUM.exists():
        report["app"] = "skipped" if args.skip_app else f"skipped: {CHROMIUM} missing"
    else:
        log.info("app cold start and %s s load run with %d sessions...", args.load_seconds, args.sessions)
        report.update(asyncio.run(_app_runs(args.weights, images, args.load_seconds, args.sessions)))
    report["machine"]["load_average_at_end"] = os.getloadavg()
    lat = report["latency_ms"]
    report["goals_met"] = {
        "predict_and_overlay_p50_ms": lat["predict_and_overlay"]["p50"] <= GOALS["predict_and_overlay_p50_ms"],
        "first_result_s": report.get("cold_start_app_s", {}).get(
            "first_result", report["cold_start_library_s"]["prediction"]) <= GOALS["first_result_s"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_report(report, args.out)
    return 0


def print_report(r: dict, out: Path) -> None:
    print(f"\nServing benchmark ({r['machine']['cpus']} CPUs, load average at start "
          f"{r['machine']['load_average_at_start'][0]:.1f}); model {r['model_version']} at {r['input_size']} px")
    lib = r["cold_start_library_s"]
    print(f"  cold start, library (process start -> first prediction / overlay): {lib['prediction']:.2f} s / "
          f"{lib['overlay']:.2f} s")
    if "cold_start_app_s" in r:
        app = r["cold_start_app_s"]
        print(f"  cold start, app (streamlit start -> first diagnosis / overlay in the browser): "
              f"{app['first_result']:.2f} s / {app['overlay']:.2f} s")
    print(f"  service load in process (LiteRT; Keras loads in the background): {r['model_load_s']:.2f} s")
    for name, s in r["latency_ms"].items():
        print(f"  {name:20s} p50 {s['p50']:7.1f} ms  p95 {s['p95']:7.1f} ms  (n={s['n']})")
    rss = r["rss_mb"]
    print(f"  RSS: {rss['before_load']:.0f} MB before load, {rss['after_load_and_warmup']:.0f} MB loaded, "
          f"{rss['after_runs']:.0f} MB after runs")
    if "load" in r:
        load = r["load"]
        lat = load["upload_to_overlay_ms"] or {"p50": float("nan"), "p95": float("nan")}
        print(f"  load: {load['sessions']} sessions for {load['seconds']:.0f} s: {load['uploads_completed']} uploads "
              f"({load['uploads_per_s']:.2f}/s), {load['errors']} errors, upload->overlay p50 {lat['p50']:.0f} ms "
              f"p95 {lat['p95']:.0f} ms; server RSS {load['server_rss_mb']['start']:.0f} -> "
              f"{load['server_rss_mb']['end']:.0f} MB")
        print(f"  uploads flagged by the OOD gate (result hidden, counted as completed): "
              f"{load['ood_flagged_uploads']} {load['ood_flagged_images']}")
        print(f"  server CPU during the load run: {load['server_cpu_s']:.1f} s "
              f"({100 * load['server_cpu_share']:.0f}% of the machine, "
              f"{load['server_cpu_s_per_upload']:.2f} s per upload)")
    print(f"  goals met: {r['goals_met']}")
    print(f"Wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
