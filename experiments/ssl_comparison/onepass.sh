#!/usr/bin/env bash
# Run 3 of the comparison on one GPU: the one-pass objective (stitchnet/objectives/one_pass.py)
# at preset cpu, on the split of runs 1-2. Carry their reproduce folder without
# weights as runs/gpu9/cpu; then, all side by side (1 CPU thread each):
#   - StitchNet-skip + one-pass FixMatch + ELBO, and the same with lesion paste: 3 seeds each
#     on the full training part, and 2 seeds each on 5 and 15 labelled slices (14 runs);
#   - then `reproduce --preset cpu` on the folder: every finished run is skipped, the
#     recommended model is chosen again on validation, the calibration and the report are made.
# Results without weights go to $OUT/results.tgz; half-precision copies of the two seed-0 main
# runs' best.pt (for the shipped default, should one of them become the recommended model) too.
#   PYTHONPATH=$PWD LIMIT=500 bash experiments/ssl_comparison/onepass.sh
# EPOCHS=1 JOBS=2 shortens every run (a smoke test of the script on a CPU). The trainings
# themselves are in onepass.py.
set -u
OUT=${OUT:-gpu-out}
LIMIT=${LIMIT:-500}
JOBS=${JOBS:-14}
RUNS=${RUNS:-runs/gpu9/cpu}
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$OUT"
start=$(date +%s)
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"; } \
  > "$OUT/device.txt" 2>&1
timeout "$LIMIT" python3 experiments/ssl_comparison/onepass.py "$RUNS" "$JOBS" ${EPOCHS:-} \
  > "$OUT/driver.log" 2>&1
echo "driver exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/device.txt"
tar czf "$OUT/results.tgz" --exclude='*.pt' --exclude='tensorboard' --exclude='report.html' "$RUNS"
for k in skip_onepass skip_onepass_paste; do
  f=$RUNS/runs/$k/seed0/best.pt
  [ -f "$f" ] && python3 -c "import sys; from stitchnet.checkpoint import save_half_copy; save_half_copy(*sys.argv[1:])" \
    "$f" "$OUT/$k-seed0.half.pt"
done
tail -5 "$OUT/driver.log"
ls -la "$OUT"
