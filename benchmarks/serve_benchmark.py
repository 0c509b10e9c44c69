"""Serving speed and memory: cold start, per-upload latency and CPU, resident memory, TensorFlow loaded or not,
and a bounded load run; for this tree and, beside it in the same run, a previous implementation.

    python benchmarks/serve_benchmark.py [--weights DIR] [--images N] [--load-seconds 60] [--sessions 8]
                                         [--warm-uploads 10] [--cold-starts 3] [--baseline REV] [--skip-app]

Every figure is measured in fresh processes started in the tree under test (this one, or with ``--baseline REV``
also the project as of git revision REV, extracted with ``git archive`` into a temporary folder and serving a
copy of the bundle with its own served copy built by its own ``skin_model.cli.lite``), so the two are measured
the same way minutes apart and their ratio holds on a noisy machine. Figures per implementation (printed and
written to benchmarks/results/serve.json):

* ``cold_start_library_s``: a fresh ``python`` process, from its start until the first calibrated prediction of
  a real image (``prediction``) and until its Grad-CAM overlay (``overlay``).
* ``latency_ms``: server-side work per upload in one process, on real HAM10000 originals (600x450 JPEG):
  ``predict`` = decode + preprocess + calibrated prediction with the bundle's TTA setting + OOD check
  (``ClassifierService.analyse``), ``gradcam`` / ``gradcam++`` = heatmap + colouring + overlay,
  ``predict_and_overlay`` = both; p50 / p95 / mean after one warm-up; the process's RSS and whether it
  imported TensorFlow.
* ``app``: ``streamlit run app.py`` on 127.0.0.1 driven by Debian's chromium (Playwright): ``cold_start_s`` =
  server process start to the first upload's result and its overlay on screen (browser already running, page load
  included), with ``cold_start_server_cpu_s``, the CPU time the server used until then (less sensitive to other
  work on the machine than the wall time); ``after_first_overlay`` = the server's RSS and the TensorFlow libraries
  in its ``/proc/PID/maps`` once that overlay is shown; ``warm`` = ``--warm-uploads`` further uploads one after
  another in the same tab: upload to overlay on screen and server CPU per upload; ``load`` = a fresh server,
  warmed by one upload, then ``--sessions`` pages uploading real images for ``--load-seconds``: uploads, errors,
  upload-to-overlay times, the server's RSS every 5 s and its CPU per upload.
* ``floor``: the same cold start (``--cold-starts`` times, median) of a minimal Streamlit page that shows what a
  result needs at the least (an uploader, the photo, one plotly bar chart, a second image): what this host and
  Streamlit cost before any of the app's own work. ``cold_start_s.page`` marks the first page on screen and
  ``cold_start_s.all_drawn`` every element of the result drawn, its charts included (the overlay mark does not
  wait for the charts, which the browser may draw later).
* ``bars``: this tree's figures against the serving goals, with the previous implementation's beside them.

Network traffic goes to 127.0.0.1 only. Nothing here is a test; run it on an otherwise idle machine for
meaningful absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
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
#: The floor: a page with the least a result shows, written with the texts ``upload_and_wait`` waits for.
FLOOR_APP = """
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

st.title("Classify a skin lesion")
upload = st.file_uploader("Dermatoscopic image")
if upload is not None:
    image = Image.open(upload).convert("RGB")
    st.image(image, caption=f"{upload.name} ({image.width}x{image.height} px)", output_format="JPEG")
    st.markdown("Differential (top 3)")
    st.plotly_chart(go.Figure(go.Bar(x=[0.7, 0.2, 0.1], y=["nv", "mel", "bkl"], orientation="h")))
    st.markdown("Overlay (opacity 0.4)")
    st.image(image.crop((75, 0, 525, 450)), output_format="JPEG",
             alt=f"The centre square of {upload.name} that the model classified")
"""
#: Goals: (figure in ``bars``, largest value that meets it).
GOALS = {
    "rss_after_first_overlay_mb": 400.0,
    "rss_max_under_load_mb": 600.0,
    "cold_start_to_first_overlay_s": 3.0,
    "warm_upload_to_overlay_p50_s": 1.0,
    "server_cpu_per_upload_under_load_s": 0.2,
    "first_result_s": 6.0,
    "predict_and_overlay_p50_ms": 150.0,
}
RESULT_TIMEOUT_MS = 180_000
#: Files of a bundle that its own ``skin_model.cli.lite`` derives; not copied for a baseline.
DERIVED_FILES = ("model.tflite", "model.tflite.json", "head.npz")

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


def tensorflow_libraries(pid: int) -> list[str]:
    """The TensorFlow shared libraries a process has mapped (``/proc/PID/maps``), by file name."""
    names = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and "tensorflow" in parts[5].lower():
            names.add(Path(parts[5].strip()).name)
    return sorted(names)


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


# ---------------------------------------------------------------------------------------------- implementations
@dataclass(frozen=True)
class Implementation:
    """A tree of the project to measure and the bundle it serves."""

    name: str
    root: Path
    weights: Path

    def run_python(self, code: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(self.root)}
        return subprocess.run([sys.executable, "-c", code, *args], cwd=self.root, env=env, capture_output=True,
                              text=True, timeout=timeout)


def resolved_revision(revision: str) -> str:
    """The commit a git revision names (as given when git cannot resolve it)."""
    out = subprocess.run(["git", "rev-parse", "--short", revision], cwd=PROJECT_ROOT, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else revision


def baseline_implementation(revision: str, weights: Path, workdir: Path) -> Implementation:
    """The project as of git ``revision`` in ``workdir`` with a copy of ``weights`` whose served copy its own
    ``skin_model.cli.lite`` builds (this imports TensorFlow once, in that process)."""
    root, bundle = workdir / "tree", workdir / "weights"
    root.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", revision], cwd=PROJECT_ROOT, capture_output=True,
                             check=True)
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    shutil.copytree(weights, bundle, ignore=shutil.ignore_patterns(*DERIVED_FILES, "checkpoints"))
    implementation = Implementation(f"previous ({revision})", root, bundle)
    built = implementation.run_python("import sys; from skin_model.cli.lite import main; sys.exit(main(sys.argv[1:]))",
                                      "--weights", str(bundle))
    if built.returncode != 0:
        raise RuntimeError(f"building the baseline's served copy failed: {built.stderr[-2000:]}")
    return implementation


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


def cold_start_library(implementation: Implementation, image: Path) -> dict[str, float]:
    """Seconds from launching a fresh process to its first prediction and to its first overlay."""
    start = time.time()
    out = implementation.run_python(COLD_START_SNIPPET, str(implementation.weights), str(image), timeout=600)
    marks = {line.split()[0].lower(): float(line.split()[1]) - start for line in out.stdout.splitlines()
             if line.startswith(("PREDICTION", "OVERLAY"))}
    if set(marks) != {"prediction", "overlay"}:
        raise RuntimeError(f"cold start run failed: {out.stderr[-2000:]}")
    return marks


LATENCY_SNIPPET = """
import json, sys, time
from pathlib import Path
import numpy as np

def rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

from skin_model.serving.service import ClassifierService
rss_start = rss_mb()
start = time.perf_counter()
service = ClassifierService.from_dir(Path(sys.argv[1]))
load_s = time.perf_counter() - start
payloads = [(Path(p).name, Path(p).read_bytes()) for p in sys.argv[2:]]
warm = service.analyse(payloads[0][1], name=payloads[0][0])  # first calls of each step
for method in ("gradcam", "gradcam++"):
    service.explain(warm, warm.prediction.top_code, method).overlay(0.4)
rss_loaded = rss_mb()
times = {"predict": [], "gradcam": [], "gradcam++": [], "predict_and_overlay": []}
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
print(json.dumps({"model_load_s": load_s, "input_size": service.metadata.input_size,
                  "model_version": service.metadata.version, "tta": service.metadata.test_time_augmentation,
                  "times_s": times, "tensorflow_imported": "tensorflow" in sys.modules,
                  "rss_mb": {"before_load": rss_start, "after_load_and_warmup": rss_loaded, "after_runs": rss_mb()}}))
"""


def latency(implementation: Implementation, images: list[Path]) -> dict:
    """Per-upload latency of the service in one fresh process of ``implementation``."""
    out = implementation.run_python(LATENCY_SNIPPET, str(implementation.weights), *map(str, images))
    if out.returncode != 0:
        raise RuntimeError(f"latency run failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["latency_ms"] = {k: summary(v) for k, v in result.pop("times_s").items()}
    return result


# ---------------------------------------------------------------------------------------------- app level
class StreamlitServer:
    """``streamlit run app.py`` on 127.0.0.1 as a subprocess; stops when the block ends."""

    def __init__(self, implementation: Implementation) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.implementation = implementation
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    def __enter__(self) -> "StreamlitServer":
        env = {**os.environ, "SKIN_WEIGHTS_DIR": str(self.implementation.weights), "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": str(self.implementation.root)}
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(self.port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false"],
            cwd=self.implementation.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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

    def tensorflow_libraries(self) -> list[str]:
        return tensorflow_libraries(self.process.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


OOD_WARNING = "does not look like a dermatoscopic image"
#: Every element drawn: no placeholder left for code the browser is still loading, and a plotly chart there.
ALL_DRAWN = ("() => !document.querySelector('[data-testid=\"stSkeleton\"]') && "
             "document.querySelectorAll('.js-plotly-plot').length > 0")
#: The start of the referral cue, which the Classify page shows in an error-coloured box.
REFER_CUE = "Refer."


async def upload_and_wait(page, image: Path, timeout_ms: int = RESULT_TIMEOUT_MS,
                          on_result=None) -> bool:
    """Upload ``image`` and wait until its result and Grad-CAM overlay are on screen and the script run has
    ended, or until the out-of-distribution warning is (which hides the result). Returns True when the image
    was flagged.
    ``on_result`` is called when the diagnosis (or the warning) appears, before the overlay."""
    await page.locator("input[type=file]").set_input_files(str(image))
    await page.get_by_text(f"{image.name} (", exact=False).first.wait_for(timeout=timeout_ms)
    flagged = page.get_by_text(OOD_WARNING).first
    # Shown with every result, sure or unsure.
    await page.get_by_text("Differential (top 3)").first.or_(flagged).wait_for(timeout=timeout_ms)
    if on_result is not None:
        on_result()
    await page.get_by_text("Overlay (opacity").first.or_(flagged).wait_for(timeout=timeout_ms)
    # This upload's own panels (the previous upload's stay on screen, marked stale, until the run ends).
    view = page.locator(f'img[alt="The centre square of {image.name} that the model classified"]')
    await view.first.or_(flagged).wait_for(timeout=timeout_ms)
    await page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stSpinner\"]') && "
        "!document.querySelector('[data-stale=\"true\"]') && "
        "[...document.images].every(i => i.complete)", timeout=timeout_ms)
    return await flagged.is_visible()


async def _cold_start(server: StreamlitServer, browser, image: Path):
    """Open the freshly started ``server``'s page and upload ``image``: (seconds from the server process's start
    to the first page, the result and the overlay on screen; the page)."""
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    await page.goto(server.url)
    await page.get_by_text("Classify a skin lesion").wait_for(timeout=RESULT_TIMEOUT_MS)
    marks = {"page": time.perf_counter() - server.started_at}
    await upload_and_wait(page, image, on_result=lambda: marks.setdefault(
        "first_result", time.perf_counter() - server.started_at))
    marks["overlay"] = time.perf_counter() - server.started_at
    await page.wait_for_function(ALL_DRAWN, timeout=RESULT_TIMEOUT_MS)
    marks["all_drawn"] = time.perf_counter() - server.started_at
    return marks, page


async def _cold_starts(browser, implementation: Implementation, image: Path, repeats: int) -> list[dict]:
    """The marks of ``repeats`` cold starts, each of a fresh server."""
    runs = []
    for _ in range(repeats):
        with StreamlitServer(implementation) as server:
            marks, page = await _cold_start(server, browser, image)
            await page.close()
        runs.append(marks)
    return runs


def medians(runs: list[dict]) -> dict[str, float]:
    return {mark: float(np.median([r[mark] for r in runs])) for mark in runs[0]}


async def _floor_runs(implementation: Implementation, image: Path, repeats: int) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        runs = await _cold_starts(browser, implementation, image, repeats)
        await browser.close()
    return runs


def floor_cold_start(image: Path, repeats: int) -> dict:
    """Cold starts of ``FLOOR_APP`` (in a temporary folder, with this project's Streamlit configuration)."""
    with tempfile.TemporaryDirectory(prefix="serve_floor_") as workdir:
        root = Path(workdir)
        (root / "app.py").write_text(FLOOR_APP)
        shutil.copytree(PROJECT_ROOT / ".streamlit", root / ".streamlit")
        runs = asyncio.run(_floor_runs(Implementation("floor", root, root), image, repeats))
    return {"runs": runs, "median_s": medians(runs),
            "description": "a minimal Streamlit page: uploader, the photo, one plotly bar chart, a second image; "
                           "same host, browser and upload as the app's cold start"}


async def _app_runs(implementation: Implementation, images: list[Path], load_seconds: float, sessions: int,
                    warm_uploads: int, cold_starts: int) -> dict:
    from playwright.async_api import async_playwright

    result: dict = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        # Cold start: server process start -> first upload's overlay visible. The browser is already running.
        # The last of them goes on to the memory and warm figures; the median of all is the cold start.
        runs = await _cold_starts(browser, implementation, images[0], cold_starts - 1)
        with StreamlitServer(implementation) as server:
            marks, page = await _cold_start(server, browser, images[0])
            runs.append(marks)
            result["cold_start_s"] = medians(runs)
            result["cold_start_runs_s"] = runs
            result["cold_start_server_cpu_s"] = server.cpu()  # CPU the server used until then: load-independent
            result["after_first_overlay"] = {"rss_mb": server.rss(),
                                             "tensorflow_libraries": server.tensorflow_libraries()}
            # Warm: further uploads one after another in the same tab.
            durations, cpu_start = [], server.cpu()
            for image in images[1:1 + warm_uploads]:
                t0 = time.perf_counter()
                await upload_and_wait(page, image)
                durations.append(time.perf_counter() - t0)
            result["warm"] = {"upload_to_overlay_ms": summary(durations) if durations else None,
                              "server_cpu_s_per_upload": (server.cpu() - cpu_start) / max(len(durations), 1),
                              "rss_mb": server.rss()}
            await page.close()
        if load_seconds > 0:
            result["load"] = await _load_run(browser, implementation, images, load_seconds, sessions)
        await browser.close()
    return result


async def _load_run(browser, implementation: Implementation, images: list[Path], load_seconds: float,
                    sessions: int) -> dict:
    """A fresh server, warmed by one upload, then ``sessions`` pages uploading for ``load_seconds``."""
    with StreamlitServer(implementation) as server:
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
                    # Error alerts other than the referral cue ("Refer. ..."), which is shown as one.
                    if await page.locator("[data-testid='stAlertContentError']").filter(
                            has_not_text=REFER_CUE).count():
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
        rss_end = server.rss()
        for page in pages:
            await page.close()
        return {
            "sessions": sessions, "seconds": wall, "uploads_completed": len(durations),
            "uploads_per_s": len(durations) / wall, "errors": len(errors), "error_samples": errors[:5],
            "ood_flagged_uploads": len(flagged), "ood_flagged_images": sorted(set(flagged)),
            "upload_to_overlay_ms": summary(durations) if durations else None,
            "server_rss_mb": {"start": rss_start, "end": rss_end,
                              "max": max([rss_end, *(mb for _, mb in rss_samples)]), "samples_s_mb": rss_samples},
            "server_cpu_s": server_cpu, "server_cpu_share": server_cpu / (wall * (os.cpu_count() or 1)),
            "server_cpu_s_per_upload": server_cpu / max(len(durations), 1),
            "tensorflow_libraries": server.tensorflow_libraries(),
        }


# ---------------------------------------------------------------------------------------------- main
def measure(implementation: Implementation, images: list[Path], args: argparse.Namespace) -> dict:
    """Every figure of one implementation."""
    log.info("%s: cold start (library, fresh process)...", implementation.name)
    figures: dict = {"root": display_path(implementation.root), "weights": display_path(implementation.weights),
                     "cold_start_library_s": cold_start_library(implementation, images[0])}
    log.info("%s: latency on %d images...", implementation.name, len(images))
    figures.update(latency(implementation, images))
    if args.skip_app or not CHROMIUM.exists():
        figures["app"] = "skipped" if args.skip_app else f"skipped: {CHROMIUM} missing"
    else:
        log.info("%s: app cold start, %d warm uploads and a %s s load run with %d sessions...", implementation.name,
                 args.warm_uploads, args.load_seconds, args.sessions)
        figures["app"] = asyncio.run(_app_runs(implementation, images, args.load_seconds, args.sessions,
                                               args.warm_uploads, args.cold_starts))
    return figures


def bar_values(figures: dict) -> dict[str, float | None]:
    """The figures the goals are read on (None when not measured)."""
    app = figures["app"] if isinstance(figures.get("app"), dict) else {}
    load = app.get("load") or {}
    warm = (app.get("warm") or {}).get("upload_to_overlay_ms") or {}
    return {
        "rss_after_first_overlay_mb": app.get("after_first_overlay", {}).get("rss_mb"),
        "rss_max_under_load_mb": (load.get("server_rss_mb") or {}).get("max"),
        "cold_start_to_first_overlay_s": app.get("cold_start_s", {}).get("overlay"),
        "warm_upload_to_overlay_p50_s": warm["p50"] / 1000 if warm else None,
        "server_cpu_per_upload_under_load_s": load.get("server_cpu_s_per_upload"),
        "first_result_s": app.get("cold_start_s", {}).get("first_result"),
        "predict_and_overlay_p50_ms": figures["latency_ms"]["predict_and_overlay"]["p50"],
    }


def bars(current: dict, previous: dict | None) -> dict:
    """Each goal with this tree's value, whether it is met, and the previous implementation's value."""
    now, before = bar_values(current), bar_values(previous) if previous else {}
    table = {name: {"value": now[name], "goal": goal, "met": None if now[name] is None else now[name] <= goal,
                    "previous": before.get(name)} for name, goal in GOALS.items()}
    app = current["app"] if isinstance(current.get("app"), dict) else {}
    libraries = app.get("after_first_overlay", {}).get("tensorflow_libraries")
    table["no_tensorflow_library_after_first_overlay"] = {
        "value": libraries, "met": None if libraries is None else not libraries,
        "previous": (previous or {}).get("app", {}).get("after_first_overlay", {}).get("tensorflow_libraries")
        if isinstance((previous or {}).get("app"), dict) else None}
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR, help="model bundle to serve")
    parser.add_argument("--images", type=int, default=40, help="real HAM images for the latency runs")
    parser.add_argument("--load-seconds", type=float, default=60.0, help="0 skips the load run")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--warm-uploads", type=int, default=10, help="sequential uploads on a warm server")
    parser.add_argument("--baseline", metavar="REV",
                        help="also measure the project as of this git revision (the previous implementation)")
    parser.add_argument("--cold-starts", type=int, default=3,
                        help="fresh servers per cold-start figure (the median is reported)")
    parser.add_argument("--skip-app", action="store_true", help="library-level figures only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.cold_starts < 1:
        parser.error("--cold-starts must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not (args.weights / "metadata.json").is_file():
        raise SystemExit(f"No model bundle in {args.weights}: train one (python train.py) or pass --weights DIR")
    images = real_images(args.images)

    report: dict = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "load_average_at_start": os.getloadavg()},
                    "weights": display_path(args.weights), "n_images": len(images), "goals": GOALS,
                    "baseline_revision": resolved_revision(args.baseline) if args.baseline else None,
                    "implementations": {}}
    current = Implementation("closed form (this tree)", PROJECT_ROOT, args.weights)
    report["implementations"]["current"] = measure(current, images, args)
    previous = None
    if args.baseline:
        with tempfile.TemporaryDirectory(prefix="serve_baseline_") as workdir:
            log.info("building the baseline %s in %s...", args.baseline, workdir)
            baseline = baseline_implementation(args.baseline, args.weights, Path(workdir))
            previous = measure(baseline, images, args)
            previous["root"] = f"git archive {args.baseline} (a temporary folder)"
            previous["weights"] = f"a copy of {display_path(args.weights)} (a temporary folder)"
            report["implementations"]["previous"] = previous
    if not args.skip_app and CHROMIUM.exists():
        log.info("floor: %d cold starts of a minimal Streamlit page...", args.cold_starts)
        report["floor"] = floor_cold_start(images[0], args.cold_starts)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["bars"] = bars(report["implementations"]["current"], previous)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_report(report, args.out)
    return 0


def print_report(r: dict, out: Path) -> None:
    print(f"\nServing benchmark ({r['machine']['cpus']} CPUs, load average at start "
          f"{r['machine']['load_average_at_start'][0]:.1f}, at end {r['machine']['load_average_at_end'][0]:.1f})")
    for key, figures in r["implementations"].items():
        print(f"\n{key}: model {figures['model_version']} at {figures['input_size']} px, TTA {figures['tta']}")
        lib = figures["cold_start_library_s"]
        print(f"  cold start, library (process start -> first prediction / overlay): {lib['prediction']:.2f} s / "
              f"{lib['overlay']:.2f} s; TensorFlow imported: {figures['tensorflow_imported']}")
        for name, s in figures["latency_ms"].items():
            print(f"  {name:20s} p50 {s['p50']:7.1f} ms  p95 {s['p95']:7.1f} ms  (n={s['n']})")
        rss = figures["rss_mb"]
        print(f"  library RSS: {rss['before_load']:.0f} MB before load, {rss['after_load_and_warmup']:.0f} MB "
              f"loaded, {rss['after_runs']:.0f} MB after runs")
        app = figures["app"]
        if not isinstance(app, dict):
            print(f"  app: {app}")
            continue
        cold, first = app["cold_start_s"], app["after_first_overlay"]
        print(f"  app cold start (streamlit start -> page / first result / overlay / all drawn in the browser, "
              f"median): {cold.get('page', float('nan')):.2f} s / {cold['first_result']:.2f} s / "
              f"{cold['overlay']:.2f} s / {cold.get('all_drawn', float('nan')):.2f} s "
              f"({app['cold_start_server_cpu_s']:.2f} s of "
              f"server CPU); then server RSS {first['rss_mb']:.0f} MB, TensorFlow libraries mapped: "
              f"{len(first['tensorflow_libraries']) or 'none'}")
        warm = app["warm"]
        if warm["upload_to_overlay_ms"]:
            print(f"  warm server, uploads one after another: upload -> overlay p50 "
                  f"{warm['upload_to_overlay_ms']['p50']:.0f} ms (n={warm['upload_to_overlay_ms']['n']}), "
                  f"server CPU {warm['server_cpu_s_per_upload']:.3f} s per upload")
        if "load" in app:
            load = app["load"]
            lat = load["upload_to_overlay_ms"] or {"p50": float("nan"), "p95": float("nan")}
            print(f"  load: {load['sessions']} sessions for {load['seconds']:.0f} s: {load['uploads_completed']} "
                  f"uploads ({load['uploads_per_s']:.2f}/s), {load['errors']} errors, upload->overlay p50 "
                  f"{lat['p50']:.0f} ms p95 {lat['p95']:.0f} ms; server RSS {load['server_rss_mb']['start']:.0f} -> "
                  f"{load['server_rss_mb']['end']:.0f} MB (max {load['server_rss_mb']['max']:.0f}); server CPU "
                  f"{load['server_cpu_s_per_upload']:.3f} s per upload ({100 * load['server_cpu_share']:.0f}% of "
                  f"the machine); OOD-flagged uploads {load['ood_flagged_uploads']}")
    if "floor" in r:
        floor = r["floor"]["median_s"]
        print(f"\nfloor ({r['floor']['description']}): page {floor['page']:.2f} s, "
              f"result {floor['first_result']:.2f} s, overlay {floor['overlay']:.2f} s, all drawn "
              f"{floor.get('all_drawn', float('nan')):.2f} s after the server's start "
              f"(median of {len(r['floor']['runs'])})")
    print("\nGoals (this tree; previous implementation beside it):")
    for name, bar in r["bars"].items():
        value, previous = (v if not isinstance(v, list) else f"{len(v)} libraries"
                           for v in (bar["value"], bar["previous"]))
        print(f"  {name:42s} {value!s:>24.24s}  goal <= {bar.get('goal', 'none')!s:6s} met: {bar['met']!s:5s} "
              f"previous: {previous}")
    print(f"Wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
