#!/usr/bin/env bash
# Ablation: the recommended configuration on the calibrated data WITHOUT scanner-variation
# augmentation, 3 seeds, so the table can tell calibration and augmentation apart. Resumable.
#   bash experiments/realct_default/ablation.sh [RUNS_DIR]   (default runs/realct_default)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/realct_default}
BIN=.venv/bin
for seed in 0 1 2; do
  [ -f "$RUNS/no_aug/seed$seed/test/metrics.json" ] || \
    $BIN/stitchnet train --labelled data/medseg_covid19_train50 \
      --unlabelled data/covid19_ct_seg_20cases_unlabelled --preset cpu --no-scanner-aug --seed $seed \
      --out "$RUNS/no_aug/seed$seed" --quiet
  out="$RUNS/no_aug/seed$seed/specificity.json"
  [ -f "$out" ] || $BIN/python benchmarks/specificity.py --model "$RUNS/no_aug/seed$seed" \
    --json "$out" > "$RUNS/no_aug/seed$seed/specificity.md"
done
