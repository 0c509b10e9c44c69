"""The batch command line, run as a real subprocess on synthetic lesion photos with the tiny bundle (and on real
HAM10000 images with the ImageNet bundle for the out-of-distribution verdict)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from skin_model.labels import CODES

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "skin_model.cli.predict", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def lesions(synthetic_ham: Path) -> list[Path]:
    """Three synthetic 600x450 lesion photos."""
    return sorted((synthetic_ham / "images_600x450").glob("*.jpg"))[:3]


@pytest.fixture(scope="module")
def real_images(ham_dir: Path) -> list[Path]:
    return sorted((ham_dir / "images_600x450").glob("*.jpg"))[:3]


@pytest.fixture(scope="module")
def bad_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "corrupt.jpg"
    path.write_bytes(b"this is not a JPEG at all")
    return path


def test_json_batch_reports_bad_file_and_continues(tiny_bundle, lesions, bad_file):
    files = [lesions[0], bad_file, *lesions[1:]]
    result = run_cli(*map(str, files), "--json", "--weights", str(tiny_bundle))
    assert result.returncode == 1, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [row["file"] for row in rows] == [str(f) for f in files], "one line per file, in order"
    bad = rows[1]
    assert bad["ok"] is False and "not a recognised image" in bad["error"]
    good = [r for r in rows if r["ok"]]
    assert len(good) == len(lesions)
    for row in good:
        probs = row["probabilities"]
        assert list(probs) == list(CODES)
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
        assert row["top_class"] == max(probs, key=probs.get)
        assert row["top_probability"] == pytest.approx(max(probs.values()))
    assert "1 of 4 file(s) failed" in result.stderr


def test_cli_matches_the_library(tiny_bundle, lesions):
    from skin_model.data.imaging import load_image
    from skin_model.serving.inference import Predictor

    result = run_cli(str(lesions[0]), "--json", "--weights", str(tiny_bundle))
    assert result.returncode == 0, result.stderr
    cli_probs = json.loads(result.stdout)["probabilities"]
    expected = Predictor.from_dir(tiny_bundle).predict(load_image(lesions[0])).probabilities
    np.testing.assert_allclose([cli_probs[c] for c in CODES], expected, atol=1e-5)


def test_text_output_names_each_file(tiny_bundle, lesions, bad_file, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    result = run_cli(str(lesions[0]), str(empty), str(bad_file), "--weights", str(tiny_bundle))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{lesions[0]}: ") and "%" in lines[0]
    assert any(line.startswith(f"{empty}: ERROR") and "empty" in line for line in lines)
    assert any(line.startswith(f"{bad_file}: ERROR") for line in lines)
    assert "2 of 3 file(s) failed" in result.stderr


def test_missing_model_fails_clearly(tmp_path, lesions):
    result = run_cli(str(lesions[0]), "--weights", str(tmp_path))
    assert result.returncode == 2
    assert "cannot load the model" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory, lesion_path: Path) -> dict[str, Path]:
    """Files the probe found confidently diagnosed by the CLI: a fully transparent PNG, a 10000x50 strip
    and a float TIFF (a synthetic lesion scaled to 0-1), generated here."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("odd")
    files = {"transparent": folder / "transparent.png", "strip": folder / "strip.png",
             "float": folder / "lesion_float.tif"}
    Image.new("RGBA", (300, 300), (120, 60, 40, 0)).save(files["transparent"])
    rng = np.random.default_rng(0)
    strip = np.clip(rng.normal((190, 140, 120), 25, (50, 10000, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(strip).save(files["strip"])
    lesion = np.asarray(Image.open(lesion_path).convert("L"), dtype=np.float32) / 255.0
    Image.fromarray(lesion, "F").save(files["float"])
    return files


@pytest.mark.real_data("HAM10000", "ImageNet", reason="only ImageNet features tell the strip of skin-toned noise "
                        "from dermoscopy (a random backbone scores it like a synthetic lesion)")
def test_cli_gives_the_apps_out_of_distribution_verdict(imagenet_gated_bundle, odd_files, real_images):
    from skin_model.serving.service import ClassifierService

    files = [*odd_files.values(), real_images[0]]
    result = run_cli(*map(str, files), "--json", "--weights", str(imagenet_gated_bundle))
    assert result.returncode == 0, result.stderr
    rows = {Path(row["file"]).name: row for row in map(json.loads, result.stdout.splitlines())}
    service = ClassifierService.from_dir(imagenet_gated_bundle)
    for path in files:
        ood = rows[path.name]["ood"]
        app = service.analyse(path.read_bytes(), name=path.name, tta=rows[path.name]["tta"])
        assert ood["checked"] is True
        assert ood["flagged"] == app.flagged_ood, path.name
        assert ood["distance"] == pytest.approx(app.ood.distance, rel=1e-6)
        assert rows[path.name]["probabilities"] == pytest.approx(dict(zip(CODES, app.prediction.probabilities)))
        # the whole verdict, as the app decides it
        verdict = app.verdict
        assert rows[path.name]["result_withheld"] is verdict.result_withheld and rows[path.name]["note"] == verdict.note
        assert rows[path.name]["unsure"] is verdict.unsure and rows[path.name]["refer"] == verdict.refer
    assert rows["transparent.png"]["ood"]["flagged"] and rows["strip.png"]["ood"]["flagged"]
    assert rows["transparent.png"]["result_withheld"] and "not a dermatoscopic image" in rows["strip.png"]["note"]
    assert not rows[real_images[0].name]["ood"]["flagged"]


def test_text_output_marks_flagged_images_and_an_off_gate(gated_bundle, tiny_bundle, odd_files):
    flagged = run_cli(str(odd_files["transparent"]), "--weights", str(gated_bundle))
    assert "NOT A DERMATOSCOPIC IMAGE" in flagged.stdout
    assert "dermatoscopic-image check: FLAGGED" in flagged.stdout
    ungated = run_cli(str(odd_files["transparent"]), "--weights", str(tiny_bundle))
    assert ungated.returncode == 0
    assert "dermatoscopic-image check is off" in ungated.stderr and "no ood.npz" in ungated.stderr
    assert "NOT A DERMATOSCOPIC IMAGE" not in ungated.stdout


def test_metadata_bomb_png_is_named_and_the_batch_goes_on(tiny_bundle, lesions, tmp_path):
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 64, 64, 8, 0, 0, 0, 0)
    bomb = tmp_path / "ztxt.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"\x00" * 8_000_000, 9))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 65 * 64)) + chunk(b"IEND", b""))
    result = run_cli(str(bomb), str(lesions[0]), "--json", "--weights", str(tiny_bundle))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[0]["ok"] is False and "not a readable image" in rows[0]["error"]
    assert rows[1]["ok"] is True
def test_referral_cue_from_the_model_metadata(tiny_bundle, lesions, tmp_path):
    """The cue follows metadata.json's referral_threshold; a bundle without one prints none."""
    import shutil

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    meta = json.loads((bundle / "metadata.json").read_text())
    row = json.loads(run_cli(str(lesions[0]), "--json", "--weights", str(tiny_bundle)).stdout)
    assert row["referral_threshold"] is None and row["refer"] is None
    threshold = round(row["malignant_probability"] - 0.01, 2)  # just below this image's roll-up: refer
    (bundle / "metadata.json").write_text(json.dumps({**meta, "referral_threshold": threshold}))
    row = json.loads(run_cli(str(lesions[0]), "--json", "--weights", str(bundle)).stdout)
    assert row["referral_threshold"] == threshold and row["refer"] is True
    text = run_cli(str(lesions[0]), "--weights", str(bundle)).stdout
    assert f"is above the referral threshold {threshold:.1%}: refer" in text
    assert "referral" not in run_cli(str(lesions[0]), "--weights", str(tiny_bundle)).stdout


def test_overlays_are_the_apps_heatmaps_of_the_top_class(tiny_bundle, lesions, tmp_path):
    from PIL import Image

    from skin_model.serving.service import ClassifierService

    out = tmp_path / "overlays"
    result = run_cli(*map(str, lesions[:2]), "--json", "--weights", str(tiny_bundle), "--overlay", str(out),
                     "--method", "gradcam++")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.gradcamplusplus.png" for p in lesions[:2])
    service = ClassifierService.from_dir(tiny_bundle)
    for row, path in zip(rows, lesions):
        analysis = service.analyse(path.read_bytes(), name=path.name)
        expected = service.explain(analysis, row["top_class"], "gradcam++").overlay(0.4)
        saved = np.asarray(Image.open(row["overlay"]).convert("RGB"))
        assert saved.shape == expected.shape
        assert np.abs(saved.astype(int) - expected).max() <= 1
    text = run_cli(str(lesions[0]), "--weights", str(tiny_bundle), "--overlay", str(out))
    assert f"Grad-CAM overlay: {out / (lesions[0].stem + '.gradcam.png')}" in text.stdout


def test_an_unusable_overlay_folder_is_named(tiny_bundle, lesions, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_cli(str(lesions[0]), "--weights", str(tiny_bundle), "--overlay", str(blocker))
    assert result.returncode == 2
    assert f"cannot create the overlay folder {blocker}" in result.stderr
