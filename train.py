"""Train the HAM10000 dermoscopy classifier and write the model bundle to ``weights/``.

What: ImageNet MobileNetV2 fine-tuned on the 7 HAM10000 diagnoses, calibrated with temperature scaling,
evaluated on a lesion-grouped held-out test split.

How, in the order the code runs:
1. Catalogue HAM10000 and the extra labelled folders (``--extra-data``: by default the ISIC Archive images of
   other clinics): metadata + highest-resolution copy of each image, pooled into one catalogue whose
   ``dataset`` column is the source. Split each folder into train/val/test, stratified by diagnosis and
   grouped by ``lesion_id`` (``--holdout-source`` first sets aside every image of a source).
2. Decode every image once through the serving preprocessing (``skin_model.data.imaging``) into memory, or, when
   they do not fit ``--memory-budget`` (or with ``--input stream``), decode them from their files batch by
   batch in the tf.data pipeline (``skin_model.data.pipeline``); training batches are augmented on the fly
   (``skin_model.data.augment``: flips, rotations, resized crops, colour jitter;
   ``--augment`` adds camera colours, zoom/any-angle framing and dermatoscope artefacts; ``--mixup`` blends
   pairs). ``--colour-constancy shades-of-grey`` makes colour constancy the network's first layer;
   ``--mixstyle`` mixes feature styles between images after early blocks (training only).
   With ``--distill-from`` the targets blend each label with earlier models' probabilities (distillation).
3. Stage "head": train pooling/dropout/dense on the frozen backbone.
4. Stage "finetune": unfreeze the backbone from ``--fine-tune-from`` up (all of it by default; batch norm
   stays frozen, in inference mode) with a lower learning rate (warm-up, then cosine decay) and gradient
   clipping; keep the epoch with the best validation balanced accuracy; stop early when it stops improving.
   With ``--ema-momentum`` the optimizer keeps a moving average of the weights, and the averaged weights are
   validated, checkpointed and shipped.
5. On validation: fit the softmax temperature; serve test-time augmentation (the 8 flips/rotations
   averaged) if it raises balanced accuracy; choose the "unsure" threshold on the probabilities as served.
   This step and the next predict through a LiteRT copy of the trained network, as the app serves it
   (``checkpoints/model.tflite``; 3-4 times faster than Keras on a CPU).
6. Evaluate on the test split and save ``model.keras`` + ``metadata.json`` + reports (``skin_model.bundle``
   names every file), then build the LiteRT copy ``model.tflite`` the app serves (``lite.build_lite``).

Both stages checkpoint every epoch and mark their completion (``training.Checkpoints``): ``--resume``
continues an interrupted run where it stopped, at evaluation if both stages had finished. A run that must
move to another machine is carried there by ``python -m skin_model.cli.park`` (``skin_model.training.parking``).
Training runs under a ``tf.distribute`` strategy (``skin_model.training.distribute``, ``--distribute``): one device,
``MirroredStrategy`` over local GPUs (or ``--cpu-replicas`` logical CPUs), or ``MultiWorkerMirroredStrategy``
across hosts named by ``TF_CONFIG``. ``--batch-size`` is per replica; the learning rates follow the global
batch by ``--lr-scaling`` (default sqrt: times the square root of the replicas). Only the chief writes into
``--output-dir``; the other workers stop once training ends.
Class imbalance is handled with balanced class weights (or, with ``--logit-adjustment``, the logit-adjusted
loss; with ``--sampling balanced|class-source``, balanced draws, the latter also over the sources in a class).
On a GPU, mixed precision and XLA are used.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from skin_model import __version__
from skin_model.bundle import (CHECKPOINTS_DIR, EVALUATIONS_DIR, HISTORY_FILE, LITE_FILE, SPLIT_FILE, ModelMetadata,
                               evaluation_file, sha256_of, write_json, write_split)
from skin_model.config import (DEFAULT_BACKBONE_WEIGHTS, DEFAULT_DATA_DIR, DEFAULT_EXTRA_DATA_DIRS, DEFAULT_WEIGHTS_DIR,
                               display_path)
from skin_model.data.choices import AUGMENT_ADDITIONS, COLOUR_CONSTANCY_METHODS
from skin_model.data.dataset import (FOLDER_COLUMN, SOURCE_COLUMN, SPLITS, collection_of, collections_named,
                                     describe_sources, find_metadata, image_copies, licence_text, load_arrays,
                                     load_sources, source_aspects, split_by_lesion, subsample)
from skin_model.data.pipeline import (INPUTS, SAMPLING, ImageFiles, choose_input, decoded_gib, make_tf_dataset,
                                      sampling_groups)
from skin_model.evaluation.holdout import HELD_OUT, held_out_dataset, hold_out_sources, recipe_flags, report_file
from skin_model.evaluation.metrics import choose_referral_threshold, choose_unsure_threshold, evaluate_probabilities
from skin_model.labels import CODES
from skin_model.model import (build_classifier, default_preprocessing, known_limits, network_data_format,
                              save_bundle, set_trainable_backbone)
from skin_model.serving.calibration import fit_temperature
from skin_model.serving.lite import LitePredictor, build_lite, export_lite
from skin_model.training.distribute import LR_SCALING, STRATEGIES, choose_distribution, split_cpu

log = logging.getLogger("train")


def build_parser() -> argparse.ArgumentParser:
    """train.py's options, one line of help each; what each does in detail: docs/training.md."""
    p = argparse.ArgumentParser(
        usage="python train.py [options]", description=__doc__.split("\n\n")[0] + " Every option in detail: "
        "docs/training.md.", formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=34,
                                                                                 width=120))
    data = p.add_argument_group("data")
    data.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, metavar="DIR",
                      help="HAM10000 folder (default ../shared/data/ham10000; env SKIN_DATA_DIR)")
    data.add_argument("--extra-data", type=Path, nargs="*", default=list(DEFAULT_EXTRA_DATA_DIRS), metavar="DIR",
                      help="labelled folders pooled with it; alone: none (default ../shared/data/isic_archive)")
    data.add_argument("--holdout-source", nargs="+", default=[], metavar="NAME",
                      help="leave these sources out of training and evaluate on them (e.g. isic2017, vidir_modern)")
    data.add_argument("--track-heldout", action="store_true",
                      help="with --holdout-source: also score the held-out images after every epoch")
    data.add_argument("--restore-aspect", action="store_true",
                      help="stretch images of sources published squashed to squares back to 4:3 (isic2017, ...)")
    data.add_argument("--max-images", type=int, default=0, metavar="N", help="train on a stratified subset (0 = all)")
    data.add_argument("--seed", type=int, default=42, metavar="N", help="seed of the split, shuffling and init (default 42)")
    data.add_argument("--split-seed", type=int, default=None, metavar="N",
                      help="seed of the split alone, to train a second seed on the same split (default: --seed)")
    data.add_argument("--backbone-weights", default=str(DEFAULT_BACKBONE_WEIGHTS), metavar="FILE",
                      help="ImageNet MobileNetV2 no-top weights (default in ../shared/weights)")

    recipe = p.add_argument_group("recipe")
    recipe.add_argument("--image-size", type=int, default=224, metavar="PX", help="square input size in pixels (default 224)")
    recipe.add_argument("--head-epochs", type=int, default=2, metavar="N", help="epochs on the frozen backbone (default 2)")
    recipe.add_argument("--finetune-epochs", type=int, default=14, metavar="N", help="maximum fine-tuning epochs (default 14)")
    recipe.add_argument("--fine-tune-from", default="all", metavar="LAYER",
                        help="first backbone layer to unfreeze (name prefix, e.g. block_8) or 'all' (default)")
    recipe.add_argument("--head-lr", type=float, default=1e-3, metavar="LR", help="head-stage learning rate (default 1e-3)")
    recipe.add_argument("--finetune-lr", type=float, default=1e-4, metavar="LR",
                        help="peak fine-tuning learning rate, warm-up then cosine decay (default 1e-4)")
    recipe.add_argument("--patience", type=int, default=6, metavar="N", help="early-stopping patience in epochs (default 6)")
    recipe.add_argument("--label-smoothing", type=float, default=0.0, metavar="E", help="label smoothing (default 0)")
    recipe.add_argument("--ema-momentum", type=float, default=0.0, metavar="M",
                        help="keep and ship a moving average of the weights, e.g. 0.998 (default 0 = off)")
    recipe.add_argument("--logit-adjustment", type=float, default=0.0, metavar="TAU",
                        help="logit-adjusted loss instead of class weights (default 0 = class weights)")
    recipe.add_argument("--sampling", choices=SAMPLING, default="shuffle", metavar="HOW",
                        help=f"how epochs draw images: {', '.join(SAMPLING)} (default shuffle)")
    recipe.add_argument("--class-weight-power", type=float, default=1.0, metavar="P",
                        help="raise the balanced class weights to P (default 1)")
    recipe.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA", help="MixUp alpha (default 0 = off)")
    recipe.add_argument("--colour-constancy", choices=COLOUR_CONSTANCY_METHODS, default="none", metavar="HOW",
                        help=f"the network's first layer: {', '.join(COLOUR_CONSTANCY_METHODS)} (default none)")
    recipe.add_argument("--mixstyle", type=float, default=0.0, metavar="P",
                        help="MixStyle probability per training batch (default 0 = off)")
    recipe.add_argument("--augment", nargs="+", default=[], choices=AUGMENT_ADDITIONS, metavar="NAME",
                        help=f"add to the default augmentation: {', '.join(AUGMENT_ADDITIONS)} (default none)")
    recipe.add_argument("--distill-from", type=Path, nargs="+", default=[], metavar="DIR",
                        help="distil from these model bundles (default none)")
    recipe.add_argument("--distill-weight", type=float, default=0.5, metavar="W",
                        help="teachers' share of the targets with --distill-from (default 0.5)")

    run = p.add_argument_group("how it runs")
    run.add_argument("--batch-size", type=int, default=32, metavar="N", help="batch size per replica (default 32)")
    run.add_argument("--distribute", choices=STRATEGIES, default="auto", metavar="HOW",
                     help=f"tf.distribute strategy: {', '.join(STRATEGIES)} (default auto)")
    run.add_argument("--cpu-replicas", type=int, default=1, metavar="N",
                     help="split the CPU into N logical devices for the mirrored strategy (default 1)")
    run.add_argument("--lr-scaling", choices=tuple(LR_SCALING), default="sqrt", metavar="HOW",
                     help=f"learning rates follow the global batch: {', '.join(LR_SCALING)} (default sqrt)")
    run.add_argument("--input", choices=INPUTS, default="auto", metavar="HOW",
                     help=f"images decoded once into memory or streamed: {', '.join(INPUTS)} (default auto)")
    run.add_argument("--memory-budget", type=float, default=8.0, metavar="GIB",
                     help="decoded images up to this size stay in memory with --input auto (default 8)")
    run.add_argument("--cache", type=Path, default=None, metavar="DIR",
                     help="with streaming input, keep decoded images in DIR (default: no cache)")
    run.add_argument("--output-dir", type=Path, default=DEFAULT_WEIGHTS_DIR, metavar="DIR",
                     help="where the bundle, split and reports go (default: weights/)")
    run.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoints")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sampling != "shuffle" and args.logit_adjustment:
        parser.error(f"--sampling {args.sampling} and --logit-adjustment both correct for class imbalance: choose one")
    if args.class_weight_power != 1.0 and (args.sampling != "shuffle" or args.logit_adjustment):
        parser.error(f"--class-weight-power tempers the class weights, which --sampling {args.sampling} and "
                     "--logit-adjustment replace")
    if args.track_heldout and not args.holdout_source:
        parser.error("--track-heldout scores the held-out source's images: it needs --holdout-source")
    return args


def split_seed(args: argparse.Namespace) -> int:
    """The seed of the lesion-grouped split (and of ``--max-images``' subset): ``--split-seed``, else ``--seed``."""
    return args.seed if args.split_seed is None else args.split_seed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # TensorFlow and the modules built on it load only now, once the arguments are checked (--help is instant).
    import keras
    import tensorflow as tf

    from skin_model.data.augment import AugmentConfig
    from skin_model.data.colour import describe
    from skin_model.training.mixstyle import insert_mixstyle, without_mixstyle
    from skin_model.training.stages import (Checkpoints, HeldOutMonitor, class_weights, compile_stage,
                                            distillation_targets, in_training_metadata, prior_shift, read_history,
                                            served_probabilities, stage_callbacks, teacher_probabilities,
                                            warmup_cosine)

    # The strategy comes first: a multi-worker one must set up its collectives before any other TensorFlow work.
    split_cpu(args.cpu_replicas)
    dist = choose_distribution(args.distribute)
    keras.utils.set_random_seed(args.seed)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    if gpu:
        keras.mixed_precision.set_global_policy("mixed_float16")
    global_batch = dist.global_batch(args.batch_size)
    log.info("Device: %s; %s, %d replica(s) on %d worker(s), global batch %d%s",
             "GPU (mixed precision, XLA)" if gpu else "CPU", dist.strategy_name, dist.replicas,
             dist.workers, global_batch, "" if dist.is_chief else f"; worker {dist.task_id} writes no output")
    out_dir: Path = args.output_dir
    work_dir = dist.checkpoint_dir(out_dir / CHECKPOINTS_DIR)
    if not args.resume and any(work_dir.iterdir()):
        sys.exit(f"{work_dir} holds checkpoints of an earlier run: pass --resume to continue it, "
                 "or delete the folder to start again")

    # 1. Catalogue and lesion-grouped split ---------------------------------------------------------------
    data_dirs = [args.data_dir, *args.extra_data]
    catalogue = load_sources(data_dirs)
    if args.max_images:
        catalogue = subsample(catalogue, args.max_images, split_seed(args))
    holdout = hold_out_sources(catalogue, args.holdout_source) if args.holdout_source else None
    if holdout is not None:
        catalogue = holdout.kept
        log.info("Holding out source(s) %s: %d images; training on %s", ", ".join(holdout.sources),
                 len(holdout.held_out), ", ".join(holdout.kept_sources))
    catalogue = split_by_lesion(catalogue, seed=split_seed(args))
    data_name = collections_named(catalogue[SOURCE_COLUMN].unique())  # "HAM10000 + ISIC Archive"
    parts = {s: catalogue[catalogue["split"] == s].reset_index(drop=True) for s in SPLITS}
    if holdout is not None:
        parts[HELD_OUT] = holdout.held_out
    if dist.is_chief:
        write_split(out_dir, pd.concat(parts.values()).drop(columns=["path"]))
    for s in parts:
        log.info("%-7s %5d images, %5d lesions", s, len(parts[s]), parts[s]["lesion_id"].nunique())

    # 2. The images through the serving preprocessing: decoded once into memory, or streamed from the files --
    n_images = sum(len(part) for part in parts.values())  # the held-out source's images too
    source = choose_input(args.input, n_images, args.image_size, args.memory_budget)
    log.info("Input: %s (decoded images %.1f GiB, budget %.1f GiB)", source, decoded_gib(n_images, args.image_size),
             args.memory_budget)
    aspects = {s: source_aspects(parts[s][SOURCE_COLUMN]) if args.restore_aspect else None for s in parts}
    if source == "memory":
        images = {s: load_arrays(list(parts[s]["path"]), args.image_size, aspects=aspects[s]) for s in parts}
    else:
        images = {s: ImageFiles(tuple(parts[s]["path"]), args.image_size, args.cache, aspects=aspects[s])
                  for s in parts}
    labels = {s: parts[s]["label"].to_numpy(np.int32) for s in parts}
    targets = labels["train"]
    if args.distill_from:
        teachers = teacher_probabilities(args.distill_from, images["train"])
        targets = distillation_targets(labels["train"], teachers, args.distill_weight)
        log.info("Distilling from %d teacher(s), weight %.2f; teachers' training balanced accuracy %.3f",
                 len(args.distill_from), args.distill_weight,
                 balanced_accuracy_score(labels["train"], teachers.argmax(axis=1)))
    sharded = dist.workers > 1  # each worker reads its share of every epoch
    train_ds = make_tf_dataset(images["train"], targets, global_batch, training=True, seed=args.seed,
                               augment_config=AugmentConfig.from_names(args.augment, args.mixup),
                               across_workers=sharded,
                               balance_by=sampling_groups(args.sampling, labels["train"],
                                                          parts["train"].get(SOURCE_COLUMN)))
    val_ds = make_tf_dataset(images["val"], labels["val"], global_batch, training=False, across_workers=sharded)
    if args.logit_adjustment:
        log_prior_shift, weights = prior_shift(labels["train"], args.logit_adjustment), None
        log.info("Logit-adjusted loss, shift %s", {c: round(float(q), 2) for c, q in zip(CODES, log_prior_shift)})
    elif args.sampling != "shuffle":
        log_prior_shift, weights = None, None
        log.info("Sampling %s: %d balanced draws per epoch, no class weights", args.sampling,
                 len(labels["train"]))
    else:
        log_prior_shift, weights = None, class_weights(labels["train"], args.class_weight_power)
        log.info("Class weights: %s", {CODES[k]: round(v, 2) for k, v in weights.items()})
    if args.track_heldout and dist.distributed:
        sys.exit("--track-heldout scores the held-out images on one device: run it without distribution")
    held_out = HeldOutMonitor(images[HELD_OUT], labels[HELD_OUT]) if args.track_heldout else None
    steps_per_epoch = math.ceil(len(images["train"]) / global_batch)
    head_lr, finetune_lr = (dist.learning_rate(lr, args.lr_scaling) for lr in (args.head_lr, args.finetune_lr))
    verbose = 1 if sys.stdout.isatty() else 2
    jit = gpu  # XLA on a GPU
    fit_options = {"validation_data": val_ds, "class_weight": weights, "verbose": verbose,
                   "shuffle": False}  # the tf.data pipeline shuffles

    with dist.strategy.scope():  # variables, optimizer and metrics mirrored on every replica
        model = build_classifier(args.image_size, args.backbone_weights, colour_constancy=args.colour_constancy)
        model = insert_mixstyle(model, args.mixstyle, seed=args.seed)

        # 3. Head on the frozen backbone ---------------------------------------------------------------
        # Each stage marks its completion (``training.Checkpoints``): a run stopped after fine-tuning (during
        # evaluation) resumes at evaluation; one stopped during fine-tuning resumes from its epoch backup.
        files = Checkpoints(work_dir)
        if files.finetune_begun:
            log.info("Head stage done; fine-tuning %s", "done" if files.finetune_done.exists() else "under way")
        elif files.head_done.exists():
            log.info("Head stage already done: loading %s", files.head_done)
            model.load_weights(files.head_done)
        else:
            set_trainable_backbone(model, None)
            compile_stage(model, head_lr, jit, label_smoothing=args.label_smoothing,
                          log_prior_shift=log_prior_shift)
            model.fit(train_ds, epochs=args.head_epochs,
                      callbacks=stage_callbacks(work_dir, "head", patience=None, held_out=held_out), **fit_options)
            model.save_weights(files.head_done)

        # 4. Fine-tune the top of the backbone --------------------------------------------------------
        set_trainable_backbone(model, args.fine_tune_from)
        schedule = warmup_cosine(finetune_lr, args.finetune_epochs * steps_per_epoch, steps_per_epoch // 2)
        compile_stage(model, schedule, jit, label_smoothing=args.label_smoothing, ema_momentum=args.ema_momentum,
                      log_prior_shift=log_prior_shift)
        if files.finetune_done.exists():
            log.info("Fine-tuning already done: using %s", files.best("finetune"))
        elif args.finetune_epochs > 0:
            model.fit(train_ds, epochs=args.finetune_epochs,
                      callbacks=stage_callbacks(work_dir, "finetune", args.patience, ema=args.ema_momentum > 0,
                                                held_out=held_out),
                      **fit_options)
            write_json(files.finetune_done, {"epochs_run": len(read_history(work_dir, ("finetune",))["finetune"])})
        if files.best("finetune").exists():
            model.load_weights(files.best("finetune"))
    dist.finish()  # every worker has trained; the rest is the chief's, on one device
    if not dist.is_chief:
        return 0
    model = without_mixstyle(model)  # training-only layers (identity in inference) leave before anything else
    if dist.distributed:  # the bundle holds a plain copy, without the strategy's mirrored variables
        trained, model = model, build_classifier(args.image_size, None, colour_constancy=args.colour_constancy)
        model.set_weights(trained.get_weights())
    set_trainable_backbone(model, None)

    # 5. Calibration, test-time augmentation and the "unsure" threshold, on validation -------------------
    # Every evaluation predicts through a LiteRT copy of the network, as the app serves it (and 3-4 times
    # faster than Keras on a CPU); the bundle's own copy is built from the saved model at the end.
    lite_file = export_lite(model, work_dir / LITE_FILE)

    def served(temperature: float) -> LitePredictor:
        return LitePredictor(lite_file, in_training_metadata(args.image_size, temperature))

    temperature = fit_temperature(served_probabilities(served(1.0), images["val"]), labels["val"])
    calibrated = {s: served_probabilities(served(temperature), images[s]) for s in ("val", "test")}
    log.info("Temperature %.3f", temperature)
    # Test-time augmentation (average of the 8 flips/rotations) is served only if it helps on validation.
    val_tta = served_probabilities(served(temperature), images["val"], tta=True)
    tta_report = evaluate_probabilities(labels["val"], val_tta, list(parts["val"]["image_id"]),
                                        dataset={"name": f"{data_name} val split, test-time augmentation"}, model={},
                                        temperature=temperature)
    single_view = balanced_accuracy_score(labels["val"], calibrated["val"].argmax(axis=1))
    use_tta = tta_report.balanced_accuracy > single_view
    log.info("Validation balanced accuracy %.3f single view, %.3f with test-time augmentation: TTA %s",
             single_view, tta_report.balanced_accuracy, "on" if use_tta else "off")
    # The "unsure" threshold is chosen on the validation probabilities as the app will serve them.
    val_served = val_tta if use_tta else calibrated["val"]
    unsure_threshold = choose_unsure_threshold(labels["val"], val_served)
    referral_threshold = choose_referral_threshold(labels["val"], val_served)
    log.info("Unsure threshold %.2f, malignant referral threshold %.2f", unsure_threshold, referral_threshold)

    # 6. Evaluate and save the bundle -----------------------------------------------------------------
    version = f"{__version__}+{datetime.now(timezone.utc):%Y%m%d%H%M}"
    model_info = {"version": version, "temperature": temperature, "referral_threshold": referral_threshold,
                  "tta": False}  # how the report's probabilities were predicted
    served_info = {**model_info, "tta": use_tta}
    reports = {}
    for s, description in (("val", "used for checkpoint selection and calibration: optimistic"),
                           ("test", "held out, never used for any choice")):
        reports[s] = evaluate_probabilities(
            labels[s], calibrated[s], list(parts[s]["image_id"]), temperature=temperature, model=model_info,
            dataset={"name": f"{data_name} {s} split", "split": s, "split_method": "lesion-grouped, stratified",
                     "seed": split_seed(args), "n_lesions": int(parts[s]["lesion_id"].nunique()),
                     "description": f"{data_name} {s} split ({description})"})
        reports[s].to_json(out_dir / evaluation_file(s))
        log.info("%s: balanced accuracy %.3f, macro AUC %.3f, melanoma sensitivity %.3f, ECE %.3f", s,
                 reports[s].balanced_accuracy, reports[s].macro_auc or float("nan"),
                 reports[s].melanoma_sensitivity, reports[s].ece)
    folders = [name for name in catalogue[FOLDER_COLUMN].unique()]
    if len(folders) > 1:  # each folder's test images as served, for the report page's per-source figures
        served_test = served_probabilities(served(temperature), images["test"], tta=use_tta)
        for folder in folders:
            rows = (parts["test"][FOLDER_COLUMN] == folder).to_numpy()
            name = collections_named(parts["test"].loc[rows, SOURCE_COLUMN].unique())
            evaluate_probabilities(
                labels["test"][rows], served_test[rows], list(parts["test"].loc[rows, "image_id"]),
                temperature=temperature, model=served_info,
                dataset={"name": f"{name} test split", "split": "test", "split_method": "lesion-grouped, stratified",
                         "seed": split_seed(args), "tta": use_tta, "n_lesions": int(parts["test"].loc[rows, "lesion_id"].nunique()),
                         "description": f"the {name} images of the test split (folder {folder}), as served"}
            ).to_json(out_dir / EVALUATIONS_DIR / f"test_{folder}.json")
    recipe = recipe_flags(vars(args), vars(build_parser().parse_args([])))  # the flags that differ from today's
    if holdout is not None:  # as served: calibrated on validation, TTA if validation chose it
        served_held_out = served_probabilities(served(temperature), images[HELD_OUT], tta=use_tta)
        reports[HELD_OUT] = evaluate_probabilities(
            labels[HELD_OUT], served_held_out, list(parts[HELD_OUT]["image_id"]), temperature=temperature,
            model=served_info,
            dataset=held_out_dataset(holdout, recipe, use_tta))
        reports[HELD_OUT].to_json(out_dir / EVALUATIONS_DIR / report_file(holdout.sources))
        held_out = reports[HELD_OUT]
        log.info("Held out %s (%s): balanced accuracy %.3f, macro AUC %s, melanoma AUC %s, sensitivity %s, ECE %.3f",
                 ", ".join(holdout.sources), recipe, held_out.balanced_accuracy, *(
                     "n/a" if v is None else f"{v:.3f}" for v in (held_out.macro_auc, held_out.per_class["mel"]["auc"],
                                                                  held_out.melanoma_sensitivity)), held_out.ece)
    history = read_history(work_dir, ("head", "finetune"))
    write_json(out_dir / HISTORY_FILE, history)

    backbone_path = Path(args.backbone_weights)
    trained_sources = sorted(parts["train"][SOURCE_COLUMN].unique())
    collections = [c for c in (collection_of(s) for s in trained_sources) if c is not None]
    collections = list(dict.fromkeys(collections))
    metadata = ModelMetadata(
        version=version, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        input_size=args.image_size, preprocessing=default_preprocessing(args.image_size, describe(model)),
        network_data_format=network_data_format(args.image_size),
        temperature=temperature, unsure_threshold=unsure_threshold, test_time_augmentation=use_tta,
        referral_threshold=referral_threshold, known_limits=list(known_limits(trained_sources)),
        licence=licence_text(trained_sources),
        training={**json.loads(json.dumps({**vars(args), "backbone_weights": display_path(args.backbone_weights)},
                                          default=display_path)),  # paths without the machine's folders
                  "recipe": recipe, "device": "GPU" if gpu else "CPU", "distribution": dist.describe(),
                  "global_batch_size": global_batch, "input_pipeline": source,
                  "learning_rates": {"head": head_lr, "finetune": finetune_lr},
                  "class_weights": {CODES[k]: v for k, v in weights.items()} if weights else None,
                  "epochs_run": {k: len(v) for k, v in history.items()}},
        data={"source": "; ".join(f"{c.name} ({c.credit}), {c.licence}" for c in collections),
              "data_dir": display_path(args.data_dir), "extra_data": [display_path(d) for d in args.extra_data],
              "folders": describe_sources(pd.concat(parts.values()), data_dirs),
              "split_seed": split_seed(args), "split_file": SPLIT_FILE,
              "metadata_sha256": sha256_of(find_metadata(args.data_dir)),
              "split_sha256": sha256_of(out_dir / SPLIT_FILE),
              "counts": {s: parts[s]["dx"].value_counts().reindex(CODES, fill_value=0).astype(int).to_dict()
                         for s in parts},
              "lesions": {s: int(parts[s]["lesion_id"].nunique()) for s in parts},
              "held_out_sources": list(holdout.sources) if holdout is not None else [],
              "image_copies": image_copies(catalogue["path"].tolist())},
        backbone={"architecture": "MobileNetV2 alpha 1.0", "source": backbone_path.name if backbone_path.is_file()
                  else args.backbone_weights,
                  "sha256": sha256_of(backbone_path) if backbone_path.is_file() else None},
        metrics={"test": reports["test"].headline(), "val": reports["val"].headline(),
                 "val_tta": tta_report.headline(),
                 **({HELD_OUT: reports[HELD_OUT].headline()} if holdout is not None else {})},
    )
    save_bundle(model, metadata, out_dir)
    build_lite(out_dir)  # the served copy, checked against model.keras
    return 0


if __name__ == "__main__":
    sys.exit(main())
