"""Memory per upload: peak resident memory for large uploads, in the library and in the running app.

    python benchmarks/memory_benchmark.py [--weights DIR] [--no-server] [--server-timeout 300]

Figures (printed and written to benchmarks/results/memory.json):

* ``uploads``: one fresh process per case loads the served model (``ClassifierService``, LiteRT + OOD
  gate), warms up and reads the file's bytes; then its peak RSS is reset (``/proc/self/clear_refs``) and
  ``service.analyse(bytes)`` runs once. ``peak_above_idle_mb`` = peak RSS during the analysis minus the
  RSS just before it. Cases: 1, 12 and 50 megapixels, as a JPEG (an upscaled HAM10000 photo: decoded at
  a reduced scale by libjpeg) and as a PNG (a synthetic lesion on skin: PNG has no reduced decoding, the
  worst case), test-time augmentation on and off. Goal: <= 400 MB above idle for 50 megapixels.
* ``server``: ``streamlit run app.py`` (the project's config, plus ``server.disconnectedSessionTTL`` = 10 s
  so a closed tab's session is dropped within the run instead of after the default 120 s) and one
  Chromium page (Playwright). First one small upload on the Batch page (loads the model and draws its
  Grad-CAM, as any real use does), tab closed: ``idle_mb``. Then 8 PNGs of 50 megapixels on the Batch page: the
  server's RSS sampled every 0.25 s until the table and the Grad-CAM overlay are shown (``peak_during_mb``),
  the tab closed, RSS 40 s later (``after_close_mb``). Bounded by ``--server-timeout``.

The synthetic files are written to a temporary folder and deleted; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path


PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from skin_model.config import DEFAULT_DATA_DIR, DEFAULT_WEIGHTS_DIR  # noqa: E402

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "memory.json"
CHROMIUM = Path("/usr/bin/chromium")
MEGAPIXELS = (1, 12, 50)
GOAL_MB = 400.0
SAMPLE_IMAGE = DEFAULT_DATA_DIR / "images_600x450" / "ISIC_0024306.jpg"
SERVER_FILES = 8
SESSION_TTL_S = 10
AFTER_CLOSE_WAIT_S = 40


# ---------------------------------------------------------------------------------------------- helpers
def proc_status_mb(field: str, pid: int | str = "self") -> float:
    """A memory field of /proc/<pid>/status (VmRSS, VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def size_for(megapixels: float) -> tuple[int, int]:
    """A 4:3 width x height of about ``megapixels`` (at most imaging.MAX_PIXELS)."""
    height = int((megapixels * 1e6 * 3 / 4) ** 0.5)
    return min(int(height * 4 / 3), int(50e6 // height)), height


def write_jpeg(path: Path, megapixels: float) -> Path:
    """A HAM10000 photo upscaled to ``megapixels`` (or a smooth synthetic one without the data), quality 90."""
    from PIL import Image

    source = Image.open(SAMPLE_IMAGE).convert("RGB") if SAMPLE_IMAGE.is_file() else synthetic_lesion((600, 450))
    source.resize(size_for(megapixels), Image.Resampling.BILINEAR).save(path, format="JPEG", quality=90)
    return path


def synthetic_lesion(size: tuple[int, int]):
    """A brown ellipse with a darker core on skin tone: compresses well as PNG at any size."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, (214, 170, 150))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w * 0.3, h * 0.25, w * 0.7, h * 0.75), fill=(120, 75, 55))
    draw.ellipse((w * 0.42, h * 0.4, w * 0.58, h * 0.6), fill=(70, 40, 30))
    return image


def write_png(path: Path, megapixels: float) -> Path:
    synthetic_lesion(size_for(megapixels)).save(path, format="PNG", compress_level=6)
    return path


# ---------------------------------------------------------------------------------------------- one upload
def child(weights: Path, path: Path, tta: bool) -> dict:
    """Run in a fresh process: peak RSS of one ``service.analyse`` above the RSS just before it."""
    from skin_model.serving.service import ClassifierService

    service = ClassifierService.from_dir(weights)
    service.warm_up()
    data = path.read_bytes()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    idle = proc_status_mb("VmRSS")
    start = time.perf_counter()
    analysis = service.analyse(data, name=path.name, tta=tta)
    seconds = time.perf_counter() - start
    peak = proc_status_mb("VmHWM")
    return {"idle_rss_mb": round(idle, 1), "peak_rss_mb": round(peak, 1), "peak_above_idle_mb": round(peak - idle, 1),
            "seconds": round(seconds, 2), "top_class": analysis.prediction.top_code}


def upload_cases(weights: Path, folder: Path) -> list[dict]:
    rows = []
    for megapixels in MEGAPIXELS:
        for fmt, writer in (("JPEG", write_jpeg), ("PNG", write_png)):
            path = writer(folder / f"upload_{megapixels}mp.{fmt.lower()}", megapixels)
            for tta in (False, True):
                result = subprocess.run(
                    [sys.executable, __file__, "--child", str(path), "--weights", str(weights)]
                    + (["--tta"] if tta else []), capture_output=True, text=True, timeout=600)
                if result.returncode != 0:
                    raise RuntimeError(result.stderr[-2000:])
                row = {"megapixels": megapixels, "format": fmt, "file_mb": round(path.stat().st_size / 1e6, 2),
                       "tta": tta, **json.loads(result.stdout.strip().splitlines()[-1])}
                rows.append(row)
                print(f"{megapixels:>3} MP {fmt:4s} ({row['file_mb']:5.1f} MB file) TTA {'on ' if tta else 'off'}: "
                      f"peak {row['peak_above_idle_mb']:6.1f} MB above idle ({row['idle_rss_mb']:.0f} MB), "
                      f"{row['seconds']:.2f} s", flush=True)
            path.unlink()
    return rows


# ---------------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread; ``peak`` since the last ``reset``."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, proc_status_mb("VmRSS", self.pid))
            except (OSError, KeyError):
                return
            time.sleep(self.interval)

    def reset(self) -> None:
        self.peak = proc_status_mb("VmRSS", self.pid)

    def stop(self) -> None:
        self._stop.set()


def batch_upload(browser, url: str, files: list[Path], timeout_ms: int) -> None:
    """Open the Batch page in a new tab, upload ``files``, wait for the table and the overlay, close it."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{url}/batch", timeout=timeout_ms)
        page.get_by_text("Upload one or more images to start.").wait_for(timeout=timeout_ms)  # model loaded
        page.locator("input[type=file]").set_input_files([str(f) for f in files], timeout=timeout_ms)
        page.get_by_text("Download the table (CSV)").wait_for(timeout=timeout_ms)
        page.get_by_text("Grad-CAM overlay for").wait_for(timeout=timeout_ms)
    finally:
        page.close()


def server_run(weights: Path, folder: Path, timeout_s: float) -> dict:
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {**os.environ, "SKIN_WEIGHTS_DIR": str(weights), "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.disconnectedSessionTTL", str(SESSION_TTL_S)],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    timeout_ms = int(timeout_s * 1000)
    small = folder / "small.jpg"
    write_jpeg(small, 0.3)
    large = [write_png(folder / f"batch_{i}.png", 50) for i in range(SERVER_FILES)]
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("streamlit did not start")
                time.sleep(0.5)
        sampler = RssSampler(process.pid)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            started = proc_status_mb("VmRSS", process.pid)
            batch_upload(browser, url, [small], timeout_ms)  # loads the model and draws its Grad-CAM
            time.sleep(SESSION_TTL_S + 10)
            idle = proc_status_mb("VmRSS", process.pid)
            sampler.reset()
            start = time.perf_counter()
            batch_upload(browser, url, large, timeout_ms)
            seconds = time.perf_counter() - start
            during = sampler.peak
            time.sleep(AFTER_CLOSE_WAIT_S)
            after = proc_status_mb("VmRSS", process.pid)
            browser.close()
        sampler.stop()
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    figures = {"files": SERVER_FILES, "megapixels_each": 50, "file_mb_each": round(large[0].stat().st_size / 1e6, 2),
               "started_mb": round(started, 1), "idle_mb": round(idle, 1), "peak_during_mb": round(during, 1),
               "peak_above_idle_mb": round(during - idle, 1), "after_close_mb": round(after, 1),
               "after_close_above_idle_mb": round(after - idle, 1), "upload_to_result_s": round(seconds, 1),
               "session_ttl_s": SESSION_TTL_S, "after_close_wait_s": AFTER_CLOSE_WAIT_S}
    print(f"server: started {started:.0f} MB, idle {idle:.0f} MB, peak {during:.0f} MB during {SERVER_FILES} x 50 MP "
          f"PNG ({seconds:.1f} s), {after:.0f} MB {AFTER_CLOSE_WAIT_S} s after the tab closed", flush=True)
    return figures


# ---------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR)
    parser.add_argument("--no-server", action="store_true", help="skip the streamlit + browser part")
    parser.add_argument("--server-only", action="store_true",
                        help="only the server part; keep the upload figures of the existing results file")
    parser.add_argument("--server-timeout", type=float, default=300.0, help="seconds allowed per browser step")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tta", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.weights, args.child, args.tta)))
        return 0
    with tempfile.TemporaryDirectory(prefix="memory_benchmark_") as tmp:
        if args.server_only and RESULTS.is_file():
            uploads = json.loads(RESULTS.read_text())["uploads"]
        else:
            uploads = upload_cases(args.weights, Path(tmp))
        server = None if args.no_server or not CHROMIUM.exists() else server_run(args.weights, Path(tmp),
                                                                                 args.server_timeout)
    fifty = [r["peak_above_idle_mb"] for r in uploads if r["megapixels"] == 50]
    results = {"measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
               "goal_50mp_peak_above_idle_mb": GOAL_MB, "goal_met": bool(fifty) and max(fifty) <= GOAL_MB
               and (server is None or server["peak_above_idle_mb"] / SERVER_FILES <= GOAL_MB),
               "uploads": uploads, "server": server}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"Wrote {RESULTS.relative_to(PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
