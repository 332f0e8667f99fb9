#!/usr/bin/env bash
# Run 6 of the comparison on one GPU: the `paper` preset (352 px, 80 epochs) of the
# recommended model (`stitchnet train` without --model), seeds 0, 1 and 2 side by side, to
# set beside the `paper`-preset U-Net's three seeds (README).
#
# Call it once per device call on the same warm machine: every call resumes the runs that have
# not finished. With FINAL=1 a run still unfinished near the time limit is ended at its last
# epoch and tested on its best validated epoch (rerunning with --epochs K resumes and ends a
# run at epoch K). Results without weights go to $OUT/results.tgz and a summary to stdout.
#   PYTHONPATH=$PWD LIMIT=560 bash experiments/ssl_comparison/paper_preset.sh            # first call
#   PYTHONPATH=$PWD LIMIT=150 FINAL=1 bash experiments/ssl_comparison/paper_preset.sh    # second call
# PRESET=cpu-small EPOCHS=2 shortens every run (a smoke test of the script on a CPU).
set -u
OUT=${OUT:-gpu-out}
LIMIT=${LIMIT:-560}
RUNS=${RUNS:-runs/gpu-paper}
SEEDS=${SEEDS:-0 1 2}
PRESET=${PRESET:-paper}
FINAL=${FINAL:-0}
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1
L=data/medseg_covid19_train50
U=data/covid19_ct_seg_20cases_unlabelled
CLI="python3 -m stitchnet.cli"
mkdir -p "$OUT" "$RUNS"
start=$(date +%s)
left() { echo $((LIMIT - ($(date +%s) - start))); }
say() { echo "$* ($(($(date +%s) - start)) s)" | tee -a "$RUNS/device.txt"; }
{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
} >>"$RUNS/device.txt" 2>&1
epochs=()
[ -n "${EPOCHS:-}" ] && epochs=(--epochs "$EPOCHS")
last_epoch() {
  python3 -c "import torch; print(torch.load('$1/last.pt', map_location='cpu', weights_only=False)['epoch'])"
}

# Both folders are prepared once (lung field, crop, resize) into the cache the trainings share.
OMP_NUM_THREADS=8 $CLI prepare $L --preset "$PRESET" --quiet &
OMP_NUM_THREADS=8 $CLI prepare $U --preset "$PRESET" --quiet &
wait
say "prepared"

margin=10
[ "$FINAL" = 1 ] && margin=45
for s in $SEEDS; do
  d=$RUNS/recommended_seed$s
  [ -f "$d/test/metrics.json" ] && continue
  OMP_NUM_THREADS=4 timeout $(($(left) - margin)) $CLI train --labelled $L --unlabelled $U \
    --preset "$PRESET" --seed "$s" --out "$d" "${epochs[@]}" --quiet >>"$d.log" 2>&1 &
done
wait
say "trainings stopped or ended"

if [ "$FINAL" = 1 ]; then
  for s in $SEEDS; do
    d=$RUNS/recommended_seed$s
    [ -f "$d/test/metrics.json" ] || [ ! -f "$d/last.pt" ] && continue
    k=$(last_epoch "$d")
    say "seed $s stopped after epoch $k: ended there and tested on its best validated epoch"
    OMP_NUM_THREADS=4 timeout $(($(left) + 20)) $CLI train --labelled $L --unlabelled $U \
      --preset "$PRESET" --seed "$s" --out "$d" --epochs "$k" --quiet >>"$d.log" 2>&1 &
  done
  wait
fi

for s in $SEEDS; do
  d=$RUNS/recommended_seed$s
  if [ -f "$d/test/metrics.json" ]; then
    python3 - "$d" <<'EOF'
import json, sys
d = sys.argv[1]
m = json.load(open(f"{d}/test/metrics.json"))
g = m["groups"]
print(
    f"{d}: lesion Dice {m['lesion_dice']:.3f}, GGO F1 {g['ggo']['f1']['mean']:.3f}, "
    f"consolidation F1 {g['consolidation']['f1']['mean']:.3f}, "
    f"pooled lesion Dice {m['pooled_dice']['lesion_dice']:.3f}"
)
EOF
  elif [ -f "$d/last.pt" ]; then
    echo "$d: unfinished, last epoch $(last_epoch "$d")"
  else
    echo "$d: no checkpoint"
  fi
done | tee -a "$RUNS/device.txt"
tar czf "$OUT/results.tgz" --exclude='*.pt' --exclude='tensorboard' --exclude='report.html' "$RUNS"
