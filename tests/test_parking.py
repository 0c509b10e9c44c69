"""Parking an unfinished train.py run in the repository (skin_model.training.parking, skin_model.cli.park): what is
kept, what is left behind, what is refused, and that train.py resumes a parked run where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skin_model.training.parking import ParkingError, park, read_parked, unpark, without_optimizer
from skin_model.training.stages import Checkpoints

ARGS = ["--holdout-source", "vidir_modern", "--augment", "artefacts"]


def tiny_fitted_model():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(7, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-2), "categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(16, 4)), np.eye(7)[np.arange(16) % 7], epochs=1, verbose=0)
    return model


def fake_run(root: Path, finetune_begun: bool) -> Checkpoints:
    """A run folder stopped during the head stage or during fine-tuning, with real Keras weight files."""
    files = Checkpoints(root / "checkpoints")
    files.folder.mkdir(parents=True)
    model = tiny_fitted_model()
    files.history("head").write_text("epoch,val_balanced_accuracy\n0,0.4\n")
    model.save_weights(files.best("head"))
    stage = "finetune" if finetune_begun else "head"
    if finetune_begun:
        model.save_weights(files.head_done)
        files.history("finetune").write_text("epoch,val_balanced_accuracy\n0,0.5\n")
        model.save_weights(files.best("finetune"))
    files.backup(stage).mkdir()
    model.save_weights(files.backup(stage) / "latest.weights.h5")
    (files.backup(stage) / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    return files


def parked_names(parked_dir: Path) -> set[str]:
    folder = parked_dir / "checkpoints"
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_a_best_checkpoint_without_optimizer_state_loads_the_same_weights(tmp_path):
    import h5py

    model = tiny_fitted_model()
    model.save_weights(tmp_path / "best.weights.h5")
    stripped = without_optimizer(tmp_path / "best.weights.h5", tmp_path / "stripped.weights.h5")
    with h5py.File(stripped, "r") as h5:
        assert "optimizer" not in h5 and "layers" in h5
    assert stripped.stat().st_size < (tmp_path / "best.weights.h5").stat().st_size
    fresh = tiny_fitted_model()
    fresh.set_weights([np.zeros_like(w) for w in fresh.get_weights()])
    with pytest.warns(UserWarning, match="optimizer"):
        fresh.load_weights(stripped)
    for a, b in zip(model.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_parking_during_fine_tuning_keeps_the_backup_as_written_and_leaves_unused_weights(tmp_path):
    files = fake_run(tmp_path / "run", finetune_begun=True)
    parked = park(tmp_path / "run", tmp_path / "runs" / "vm_art", ARGS)
    assert parked_names(parked.folder) == {"history_head.csv", "history_finetune.csv", "best_finetune.weights.h5",
                                           "backup_finetune/latest.weights.h5",
                                           "backup_finetune/training_metadata.json"}, \
        "no head weights (the backup holds the whole model) and no best head checkpoint (never read)"
    kept = parked.folder / "checkpoints"
    backup = files.backup("finetune") / "latest.weights.h5"
    assert (kept / "backup_finetune" / "latest.weights.h5").read_bytes() == backup.read_bytes(), \
        "weights and optimizer state as written"
    assert (kept / "best_finetune.weights.h5").stat().st_size < files.best("finetune").stat().st_size
    assert read_parked(parked.folder).train_args == tuple(ARGS)


def test_parking_during_the_head_stage_keeps_its_backup_and_history(tmp_path):
    fake_run(tmp_path / "run", finetune_begun=False)
    parked = park(tmp_path / "run", tmp_path / "runs" / "head", ARGS)
    assert parked_names(parked.folder) == {"history_head.csv", "backup_head/latest.weights.h5",
                                           "backup_head/training_metadata.json"}


@pytest.mark.parametrize("problem", ["finished", "empty", "exists", "output-dir"])
def test_parking_refuses_what_cannot_be_resumed_and_writes_nothing(tmp_path, problem):
    run, target = tmp_path / "run", tmp_path / "runs" / "x"
    if problem != "empty":
        fake_run(run, finetune_begun=True)
    else:
        (run / "checkpoints").mkdir(parents=True)
    args = [*ARGS, "--output-dir", "elsewhere"] if problem == "output-dir" else ARGS
    if problem == "finished":
        (run / "metadata.json").write_text("{}")
    if problem == "exists":
        target.mkdir(parents=True)
    with pytest.raises(ParkingError) as info:
        park(run, target, args)
    expected = {"finished": "finished", "empty": "no epoch", "exists": "exists already", "output-dir": "--output-dir"}
    assert expected[problem] in str(info.value)
    assert not target.exists() or not any(target.iterdir())


def test_unparking_restores_the_checkpoints_and_names_the_resume_command(tmp_path):
    files = fake_run(tmp_path / "run", finetune_begun=True)
    parked = park(tmp_path / "run", tmp_path / "runs" / "vm_art", ARGS)
    unparked = unpark(parked.folder, tmp_path / "next")
    restored = Checkpoints(tmp_path / "next" / "checkpoints")
    assert restored.finetune_begun and not restored.head_done.exists()
    assert restored.history("finetune").read_text() == files.history("finetune").read_text()
    command = unparked.resume_command(tmp_path / "next")
    assert command.startswith("python3 train.py --holdout-source vidir_modern --augment artefacts --output-dir ")
    assert command.endswith(" --resume")
    with pytest.raises(ParkingError, match="holds checkpoints already"):
        unpark(parked.folder, tmp_path / "next")
    with pytest.raises(ParkingError, match="not a parked run"):
        unpark(tmp_path / "runs" / "missing", tmp_path / "other")


def test_the_cli_parks_and_unparks(tmp_path, capsys):
    from skin_model.cli.park import main

    fake_run(tmp_path / "run", finetune_begun=True)
    root = ["--parked-root", str(tmp_path / "runs")]
    assert main([*root, "park", str(tmp_path / "run"), "vm_art", "--", *ARGS]) == 0
    assert json.loads((tmp_path / "runs" / "vm_art" / "train_args.json").read_text())["train_args"] == ARGS
    assert main([*root, "unpark", "vm_art", str(tmp_path / "next")]) == 0
    assert capsys.readouterr().out.strip().endswith("--resume")
    assert main([*root, "park", str(tmp_path / "run"), "vm_art", "--", *ARGS]) == 2, "the name is taken"
