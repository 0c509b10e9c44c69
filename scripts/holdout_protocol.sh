#!/usr/bin/env bash
# The leave-source-out yardstick for one recipe: train.py with isic2017, then rosendahl, then vidir_modern held
# out (skin_model.evaluation.holdout.YARDSTICK_SOURCES), each run in RUN_ROOT/<source>/ (its log beside it).
# Extra arguments go to train.py unchanged (e.g. --extra-data alone: HAM10000 only).
#   scripts/holdout_protocol.sh RUN_ROOT [train.py options...]
# e.g. scripts/holdout_protocol.sh /tmp/runs/baseline --finetune-epochs 6
# A run that already finished (its metadata.json exists) is skipped; an interrupted one is resumed.
set -euo pipefail
root=${1:?usage: scripts/holdout_protocol.sh RUN_ROOT [train.py options...]}
shift
cd "$(dirname "$0")/.."
for source in isic2017 rosendahl vidir_modern; do
    out="$root/$source"
    if [ -f "$out/metadata.json" ]; then echo "$out: done"; continue; fi
    resume=()
    if [ -d "$out/checkpoints" ] && [ -n "$(ls -A "$out/checkpoints")" ]; then resume=(--resume); fi
    mkdir -p "$out"
    python3 train.py --holdout-source "$source" --output-dir "$out" "${resume[@]}" "$@" >> "$out/train.log" 2>&1
    grep "Held out" "$out/train.log" || true
done
