#!/usr/bin/env bash
# Run 5 of the comparison on one GPU. Carry the split of runs 1-4 as runs/gpu10/splits.json
# (a copy of runs/gpu/cpu/splits.json); then, side by side:
#   1. schedule.py: the recommended model with a longer schedule, paste p=1 or an
#      EMA teacher, and the U-Net with the longer schedule, at preset cpu (JOBS at a time);
#   2. the `paper` preset (352 px, 80 epochs) of the recommended model (`stitchnet train` without
#      --model), seed 0, stopped at the time limit if it has not finished and then tested on its
#      best validated epoch (rerunning with --epochs K resumes and ends a run at epoch K).
# Results without weights go to $OUT/results.tgz.
#   PYTHONPATH=$PWD LIMIT=540 bash experiments/ssl_comparison/schedule.sh
# SCALE=60 PAPER_EPOCHS=1 JOBS=2 shortens every run (a smoke test of the script on a CPU).
set -u
OUT=${OUT:-gpu-out}
LIMIT=${LIMIT:-540}
JOBS=${JOBS:-13}
RUNS=${RUNS:-runs/gpu10}
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
L=data/medseg_covid19_train50
U=data/covid19_ct_seg_20cases_unlabelled
CLI="python3 -m stitchnet.cli"
mkdir -p "$OUT" "$RUNS/paper"
start=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - start) )); }
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"; } \
  > "$OUT/device.txt" 2>&1
timeout "$LIMIT" python3 experiments/ssl_comparison/schedule.py "$RUNS" "$JOBS" ${SCALE:-1} \
  > "$RUNS/driver.log" 2>&1 &
driver=$!
d=$RUNS/paper/recommended_seed0
epochs=()
[ -n "${PAPER_EPOCHS:-}" ] && epochs=(--epochs "$PAPER_EPOCHS")
$CLI prepare $L --preset paper --quiet && $CLI prepare $U --preset paper --quiet
echo "paper preset prepared after $(( $(date +%s) - start )) s" | tee -a "$OUT/device.txt"
timeout $(( $(left) - 45 )) $CLI train --labelled $L --unlabelled $U --preset paper --seed 0 \
  --out $d "${epochs[@]}" --quiet > $d.log 2>&1
echo "paper train exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/device.txt"
if [ ! -f $d/test/metrics.json ] && [ -f $d/last.pt ]; then
  k=$(python3 -c "import torch;print(torch.load('$d/last.pt',map_location='cpu',weights_only=False)['epoch'])")
  echo "paper recommended stopped after epoch ${k:-none} of 80" | tee -a "$OUT/device.txt"
  [ -n "$k" ] && timeout $(( $(left) + 20 )) $CLI train --labelled $L --unlabelled $U \
    --preset paper --seed 0 --out $d --epochs "$k" --quiet >> $d.log 2>&1
fi
wait $driver
echo "driver exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/device.txt"
tar czf "$OUT/results.tgz" --exclude='*.pt' --exclude='tensorboard' --exclude='report.html' "$RUNS"
tail -3 "$RUNS/driver.log"
ls -la "$OUT"
