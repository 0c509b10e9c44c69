"""Leave-source-out protocol (skin_model.evaluation.holdout and train.py --holdout-source): no lesion or image of a
held-out source is trained on, and the run writes a held-out report the report page can list."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skin_model.bundle import ModelMetadata
from skin_model.evaluation.holdout import (HELD_OUT, SPLIT_METHOD, HoldoutError, ServedRecipe, held_out_rows,
                                           hold_out_sources, recipe_flags, report_file, rows_frame)


def toy_catalogue() -> pd.DataFrame:
    """Four lesions from two sources; lesion L3 was photographed in both."""
    return pd.DataFrame({"lesion_id": ["L1", "L1", "L2", "L3", "L3", "L4"],
                         "image_id": [f"I{i}" for i in range(6)],
                         "dx": ["nv", "nv", "mel", "bcc", "bcc", "nv"],
                         "dataset": ["a", "a", "b", "a", "b", "b"]})


def test_held_out_source_takes_its_lesions_with_it():
    holdout = hold_out_sources(toy_catalogue(), ["b"])
    assert set(holdout.held_out["image_id"]) == {"I2", "I4", "I5"}
    assert set(holdout.kept["image_id"]) == {"I0", "I1"}, "I3 shows lesion L3, which is held out"
    assert holdout.dropped == 1 and holdout.sources == ("b",) and holdout.kept_sources == ("a",)
    assert (holdout.held_out["split"] == HELD_OUT).all()
    assert not set(holdout.kept["lesion_id"]) & set(holdout.held_out["lesion_id"])


@pytest.mark.parametrize("sources, problem", [(["c"], "Unknown source"), (["a", "b"], "nothing to train on")])
def test_bad_sources_are_named(sources, problem):
    with pytest.raises(HoldoutError, match=problem):
        hold_out_sources(toy_catalogue(), sources)
    with pytest.raises(HoldoutError, match="no 'dataset' column"):
        hold_out_sources(toy_catalogue().drop(columns="dataset"), ["a"])


@pytest.mark.real_data("HAM10000", reason="checks the real sources' image counts (rosendahl 2,259, vidir_modern 3,363)")
def test_real_sources_split_cleanly(ham_dir: Path):
    from skin_model.data.dataset import load_catalogue

    catalogue = load_catalogue(ham_dir)
    for source, n in (("rosendahl", 2259), ("vidir_modern", 3363)):
        holdout = hold_out_sources(catalogue, [source])
        assert len(holdout.held_out) == n
        assert len(holdout.kept) + len(holdout.held_out) + holdout.dropped == len(catalogue)
        assert source not in set(holdout.kept["dataset"])
        assert not set(holdout.kept["lesion_id"]) & set(holdout.held_out["lesion_id"])


def test_recipe_names_only_the_changed_flags():
    defaults = {"finetune_epochs": 14, "augment": [], "colour_constancy": "none", "output_dir": "w", "resume": False}
    assert recipe_flags(defaults, defaults) == "today's recipe"
    changed = {**defaults, "finetune_epochs": 6, "augment": ["colour", "framing"], "output_dir": "/x", "resume": True}
    assert recipe_flags(changed, defaults) == "--finetune-epochs 6 --augment colour framing"


@pytest.fixture(scope="module")
def held_out_run(tmp_path_factory, synthetic_ham: Path, random_backbone_weights: Path) -> Path:
    """train.py on ~150 synthetic images at 64 px (random backbone) with rosendahl held out, colour constancy and
    every augmentation on, scoring the held-out images after every epoch."""
    from test_train_smoke import train_module

    out = tmp_path_factory.mktemp("holdout_run")
    code = train_module().main([
        "--extra-data", "--max-images", "150", "--image-size", "64", "--head-epochs", "1", "--finetune-epochs", "1",
        "--batch-size", "16", "--holdout-source", "rosendahl", "--colour-constancy", "shades-of-grey",
        "--augment", "colour", "framing", "artefacts", "--track-heldout",
        "--data-dir", str(synthetic_ham), "--backbone-weights", str(random_backbone_weights),
        "--output-dir", str(out)])
    assert code == 0
    return out


def test_run_never_trains_on_the_held_out_source(held_out_run: Path):
    split = pd.read_csv(held_out_run / "split.csv")
    assert set(split.loc[split["split"] == HELD_OUT, "dataset"]) == {"rosendahl"}
    assert "rosendahl" not in set(split.loc[split["split"] != HELD_OUT, "dataset"])
    assert (split.groupby("lesion_id")["split"].nunique() == 1).all()


def test_run_writes_the_held_out_report_as_served(held_out_run: Path):
    from skin_model.evaluation.metrics import EvaluationReport

    split = pd.read_csv(held_out_run / "split.csv")
    path = held_out_run / "evaluations" / report_file(("rosendahl",))
    report = EvaluationReport.from_json(path)
    metadata = json.loads((held_out_run / "metadata.json").read_text())
    assert sorted(p["image_id"] for p in report.predictions) == sorted(split.loc[split["split"] == HELD_OUT, "image_id"])
    assert report.dataset["split_method"] == SPLIT_METHOD and report.dataset["sources"] == ["rosendahl"]
    assert "rosendahl" not in report.dataset["trained_on"]
    assert report.dataset["tta"] == metadata["test_time_augmentation"]
    assert "--colour-constancy shades-of-grey" in report.dataset["recipe"]
    assert metadata["data"]["held_out_sources"] == ["rosendahl"]
    text = (held_out_run / "metadata.json").read_text() + path.read_text()
    assert str(held_out_run.parent) not in text and '"/' not in text, "no absolute machine paths recorded"
    assert metadata["metrics"][HELD_OUT]["balanced_accuracy"] == pytest.approx(report.balanced_accuracy)
    assert report.model["referral_threshold"] == metadata["referral_threshold"], "judged later at its own threshold"
    assert metadata["training"]["recipe"] == report.dataset["recipe"], "the bundle names the recipe it measures"
    assert "track" not in report.dataset["recipe"], "what a run logs is not its recipe"
    assert metadata["training"]["augment"] == ["colour", "framing", "artefacts"]
    assert "shades of grey" in metadata["preprocessing"]["colour_constancy"]
    probs = np.array([p["probs"] for p in report.predictions])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)

    broken = held_out_run / "evaluations" / "heldout_broken.json"
    broken.write_text("{not json")
    (held_out_run / "evaluations" / "other.json").write_text("{not json")
    rows, problems = held_out_rows([path, held_out_run / "evaluation_val.json", broken,
                                    held_out_run / "evaluations" / "other.json"])
    assert len(rows) == 1, "only the held-out report is a row"
    assert len(problems) == 1 and problems[0].startswith("heldout_broken.json"), "a broken held-out report is named"
    assert rows[0].source == "rosendahl" and rows[0].balanced_accuracy == pytest.approx(report.balanced_accuracy)
    assert rows_frame(rows).loc[0, "melanoma AUC"] == report.per_class["mel"]["auc"]
    served = ServedRecipe.of(ModelMetadata.from_json(held_out_run / "metadata.json"))
    assert served.recipe == report.dataset["recipe"] and rows_frame(rows, served).loc[0, "served"]
    assert not rows_frame(rows, replace(served, recipe="today's recipe")).loc[0, "served"]
    assert not rows_frame(rows, replace(served, collections="HAM10000 + ISIC Archive")).loc[0, "served"], \
        "the same flags on other data are another recipe"
    assert not rows_frame(rows).loc[0, "served"], "no recipe recorded: nothing is marked"


def test_run_records_the_held_out_figures_epoch_by_epoch(held_out_run: Path):
    from skin_model.evaluation.compare import FIGURES
    from skin_model.report.training_curves import training_curves

    history = json.loads((held_out_run / "history.json").read_text())
    for stage in ("head", "finetune"):
        assert len(history[stage]) == 1
        for name in FIGURES:
            assert 0.0 <= history[stage][0][f"heldout_{name}"] <= 1.0
    curves = training_curves(held_out_run / "history.json")
    assert (curves["subset"] == "held-out source").sum() == 2, "one point per epoch on the report page"


def test_tracking_the_held_out_source_needs_one():
    from test_train_smoke import train_module

    with pytest.raises(SystemExit):
        train_module().parse_args(["--track-heldout"])
    assert train_module().parse_args(["--track-heldout", "--holdout-source", "rosendahl"]).track_heldout


def test_the_split_seed_follows_the_seed_unless_given():
    from test_train_smoke import train_module

    train = train_module()
    assert train.split_seed(train.parse_args([])) == 42
    assert train.split_seed(train.parse_args(["--seed", "43"])) == 43
    second_seed = train.parse_args(["--seed", "43", "--split-seed", "42"])
    assert train.split_seed(second_seed) == 42 and second_seed.seed == 43
    defaults = vars(train.build_parser().parse_args([]))
    assert recipe_flags(vars(second_seed), defaults) == "--seed 43 --split-seed 42"
    assert recipe_flags(vars(train.parse_args(["--seed", "43"])), defaults) == "--seed 43"
