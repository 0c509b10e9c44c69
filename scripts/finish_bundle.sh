#!/usr/bin/env bash
# The steps after train.py that make a trained folder a complete, servable bundle, in the order they depend
# on each other:
#   1. the served LiteRT copy, unless up to date    -> BUNDLE/model.tflite (the reports predict through it;
#      it is not committed, so a trained folder carried in git has none)
#   2. 8-view TTA reports on validation and test  -> BUNDLE/evaluations/{val,test}_tta.json (every source
#      the bundle was trained on; train.py's evaluations/test_<folder>.json hold each folder's test images)
#   3. the out-of-distribution gate, then its rates -> BUNDLE/ood.npz, BUNDLE/ood_figures.json
#   4. Grad-CAM localisation on the test split      -> BUNDLE/localisation_test.json
#   5. metadata fields the reports determine (referral threshold, test-TTA metrics, known limits)
#   scripts/finish_bundle.sh [BUNDLE [ood fit options...]]
# BUNDLE defaults to weights; images are found by id anywhere under SKIN_IMAGES_DIR (default ../shared/data, which
# holds HAM10000 and the ISIC folder: whichever the bundle was trained on); further arguments go to
# `python -m skin_model.cli.ood fit` (e.g. --components 32).
# Give BUNDLE relative to the repository (e.g. weights) so the reports record no machine paths.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=${1:-weights}
shift $(( $# > 0 ? 1 : 0 ))
data=${SKIN_IMAGES_DIR:-${SKIN_SHARED_DIR:-../shared}/data}
[ -f "$bundle/metadata.json" ] || { echo "$bundle: no metadata.json, not a trained bundle" >&2; exit 2; }
[ -f "$bundle/split.csv" ] || { echo "$bundle: no split.csv" >&2; exit 2; }
python3 -m skin_model.cli.lite --weights "$bundle"
mkdir -p "$bundle/evaluations"
for split in val test; do
    python3 -m skin_model.cli.evaluate --weights "$bundle" --images "$data" --labels "$bundle/split.csv" \
        --split "$split" --tta --name "the model's sources" --out "$bundle/evaluations/${split}_tta.json"
done
python3 -m skin_model.cli.ood fit --weights "$bundle" --data-dir "$data" "$@"
python3 -m skin_model.cli.ood measure --weights "$bundle" --data-dir "$data"
python3 -m skin_model.cli.localisation --weights "$bundle" --data-dir "$data" --split test
python3 -m skin_model.cli.metadata_update --weights "$bundle"
