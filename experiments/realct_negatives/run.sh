#!/usr/bin/env bash
# The recommended model trained with lesion-free real CT slices added to the labelled ones, one
# lesion-free scan held out each time and measured (benchmarks/specificity.py), 3 seeds each.
# The test part is the project's split (the same 10 labelled slices as experiments/realct_default).
# Resumable: finished runs are skipped, an interrupted train resumes.
#   bash experiments/realct_negatives/run.sh [RUNS_DIR] [HELD_OUT ...]   (default: the LIDC slice)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/realct_negatives}
shift || true
HELD=${*:-lidc_lungmask_slice}
BIN=.venv/bin
U=data/covid19_ct_seg_20cases_unlabelled
for held in $HELD; do
  data="$RUNS/data_$held"
  [ -f "$data/splits.json" ] || $BIN/python experiments/realct_negatives/build.py \
    --hold-out "$held" --out "$data"
  for seed in 0 1 2; do
    run="$RUNS/$held/seed$seed"
    [ -f "$run/test/metrics.json" ] || \
      $BIN/stitchnet train --labelled "$data" --unlabelled $U --preset cpu --seed $seed \
      --splits "$data/splits.json" --out "$run" --quiet
    [ -f "$run/specificity.json" ] || $BIN/python benchmarks/specificity.py --model "$run" \
      --json "$run/specificity.json" > "$run/specificity.md"
  done
done
