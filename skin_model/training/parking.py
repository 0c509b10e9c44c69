"""Carry an unfinished ``train.py`` run to another machine through the repository ("parking").

A full run takes 1-3.5 hours on 2 CPU cores; where a machine's processes are stopped before that, or the run
must move to another machine, it is parked: the smallest set of its checkpoint files from which
``train.py --resume`` goes on exactly where it stopped is copied into ``runs/<name>/`` (with the run's
``train.py`` arguments) and committed; on the other machine it is unparked into a run folder and resumed.

What is parked, from the run's ``checkpoints/`` (``training.Checkpoints`` names every file):
- each stage's per-epoch history (the best validation score so far is read from it);
- the running stage's epoch backup, weights and optimizer state as Keras wrote them, so the resumed stage
  goes on from the same model, optimizer, learning-rate step, best score and early-stopping count (the
  shuffling and augmentation draws after a resume differ from an uninterrupted run's, as for any --resume);
- fine-tuning's best checkpoint with its optimizer state left out (only its weights are ever loaded): about
  a third of the file;
- the head stage's final weights only while fine-tuning has not begun (afterwards the fine-tuning backup or
  best checkpoint holds the whole model), and the fine-tuning marker.
The head stage's best checkpoint is never read and is left behind. A parked run is deleted from the tree
once its results are harvested (its files stay in git history, ~36 MB for a run stopped during fine-tuning).
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from skin_model.training.stages import Checkpoints

log = logging.getLogger(__name__)

STAGES = ("head", "finetune")
ARGS_FILE = "train_args.json"  # the run's train.py arguments (without --output-dir and --resume)
PARKED_CHECKPOINTS = "checkpoints"


class ParkingError(ValueError):
    """A run that cannot be parked or unparked as asked (the message names the reason)."""


@dataclass(frozen=True)
class ParkedRun:
    """A parked run: its folder in the repository and the ``train.py`` arguments it was started with."""

    folder: Path
    train_args: tuple[str, ...]

    def resume_command(self, run_dir: Path) -> str:
        """The command that continues the run in ``run_dir`` (after ``unpark``)."""
        return shlex.join(["python3", "train.py", *self.train_args, "--output-dir", str(run_dir), "--resume"])


def without_optimizer(source: Path, target: Path) -> Path:
    """Copy a Keras ``.weights.h5`` file without its optimizer state (``model.load_weights`` of the copy sets
    the same weights; Keras warns that it skips the optimizer's variables)."""
    import h5py

    with h5py.File(source, "r") as h5, h5py.File(target, "w") as out:
        for key in h5:
            if key != "optimizer":
                h5.copy(key, out)
        out.attrs.update(dict(h5.attrs))
    return target


def files_to_park(checkpoints: Checkpoints) -> dict[str, Path]:
    """The run's files a resume needs, by their path relative to the checkpoints folder."""
    chosen: dict[str, Path] = {}

    def add(path: Path) -> None:
        if path.is_file():
            chosen[path.relative_to(checkpoints.folder).as_posix()] = path
        elif path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                chosen[file.relative_to(checkpoints.folder).as_posix()] = file

    for stage in STAGES:
        add(checkpoints.history(stage))
        add(checkpoints.backup(stage))
    add(checkpoints.best("finetune"))
    add(checkpoints.finetune_done)
    if not checkpoints.finetune_begun:
        add(checkpoints.head_done)
    return chosen


def park(run_dir: Path, parked_dir: Path, train_args: list[str]) -> ParkedRun:
    """Copy the resumable state of the run in ``run_dir`` into ``parked_dir`` (which must not exist yet)."""
    checkpoints = Checkpoints(Path(run_dir) / "checkpoints")
    if (Path(run_dir) / "metadata.json").exists():
        raise ParkingError(f"{run_dir} has finished (it has a metadata.json): nothing to resume")
    chosen = files_to_park(checkpoints)
    if not any(name.endswith(".csv") for name in chosen):
        raise ParkingError(f"{checkpoints.folder} holds no epoch of a train.py run")
    if parked_dir.exists():
        raise ParkingError(f"{parked_dir} exists already: choose another name or delete it")
    flags = {"--output-dir", "--resume"} & set(train_args)
    if flags:
        raise ParkingError(f"give train.py's arguments without {', '.join(sorted(flags))}")
    target = parked_dir / PARKED_CHECKPOINTS
    for name, source in chosen.items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        if source.name.startswith("best_"):
            without_optimizer(source, target / name)
        else:
            shutil.copy2(source, target / name)
    (parked_dir / ARGS_FILE).write_text(json.dumps({"train_args": list(train_args)}, indent=1) + "\n")
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    log.info("Parked %d files (%.1f MB) of %s in %s", len(chosen), size / 1e6, run_dir, parked_dir)
    return ParkedRun(parked_dir, tuple(train_args))


def read_parked(parked_dir: Path) -> ParkedRun:
    """The parked run in ``parked_dir`` (raises ParkingError when it is not one)."""
    try:
        args = json.loads((parked_dir / ARGS_FILE).read_text())["train_args"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ParkingError(f"{parked_dir} is not a parked run ({ARGS_FILE} missing or unreadable)") from exc
    if not (parked_dir / PARKED_CHECKPOINTS).is_dir():
        raise ParkingError(f"{parked_dir} has no {PARKED_CHECKPOINTS}/ folder")
    return ParkedRun(parked_dir, tuple(str(a) for a in args))


def unpark(parked_dir: Path, run_dir: Path) -> ParkedRun:
    """Copy a parked run's checkpoints into ``run_dir/checkpoints`` (which must be empty or absent)."""
    parked = read_parked(parked_dir)
    target = Path(run_dir) / "checkpoints"
    if target.exists() and any(target.iterdir()):
        raise ParkingError(f"{target} holds checkpoints already: unpark into a new run folder")
    shutil.copytree(parked_dir / PARKED_CHECKPOINTS, target, dirs_exist_ok=True)
    log.info("Unparked %s into %s", parked_dir, run_dir)
    return parked
