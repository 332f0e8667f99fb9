#!/usr/bin/env bash
# The default model retrained on the calibrated data, 3 seeds at preset `cpu`, beside the same
# model without the unlabelled pool; then each run's specificity on the non-lesion scans.
# Resumable: rerun the same command and finished runs are skipped (train resumes from last.pt).
#   bash experiments/realct_default/run.sh [RUNS_DIR]      (default runs/realct_default)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/realct_default}
BIN=.venv/bin
L=data/medseg_covid19_train50
U=data/covid19_ct_seg_20cases_unlabelled
for seed in 0 1 2; do
  # The recommended configuration (no --model) with scanner-variation augmentation.
  [ -f "$RUNS/new/seed$seed/test/metrics.json" ] || \
    $BIN/stitchnet train --labelled $L --unlabelled $U --preset cpu --scanner-aug --seed $seed \
      --out "$RUNS/new/seed$seed" --quiet
  # The same model and augmentation, labelled slices only (no unlabelled pool).
  [ -f "$RUNS/no_pool/seed$seed/test/metrics.json" ] || \
    $BIN/stitchnet train --model stitchnet-skip --ssl none --labelled $L --preset cpu \
      --scanner-aug --seed $seed --out "$RUNS/no_pool/seed$seed" --quiet
done
for kind in new no_pool; do
  for seed in 0 1 2; do
    out="$RUNS/$kind/seed$seed/specificity.json"
    [ -f "$out" ] || $BIN/python benchmarks/specificity.py --model "$RUNS/$kind/seed$seed" \
      --json "$out" > "$RUNS/$kind/seed$seed/specificity.md"
  done
done
