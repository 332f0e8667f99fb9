#!/usr/bin/env bash
# Run 1 of the semi-supervised comparison on one GPU, in one prepared run (~9 min on an H100):
#   1. `stitchnet reproduce --preset cpu --jobs J`: every variant x 3 seeds at 128 px, the
#      recommended model chosen on validation, then the label-efficiency runs;
#   2. side by side with it, the `paper` preset (352 px) of the supervised U-Net and of the
#      semi-supervised candidates, one seed each.
# Results are packed into $OUT (or ./gpu-out). The project runs uninstalled:
#   PYTHONPATH=$PWD bash experiments/ssl_comparison/comparison.sh
set -u
OUT=${OUT:-gpu-out}
JOBS=${JOBS:-12}
LIMIT=${LIMIT:-500}          # seconds for everything; unfinished runs are reported as such
EPOCHS=${EPOCHS:+--epochs $EPOCHS}  # EPOCHS=1 for a smoke run of the script itself
SEEDS=${SEEDS:+--seeds $SEEDS}
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$OUT" runs/gpu
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/device.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" >> "$OUT/device.txt"
L=data/medseg_covid19_train50
U=data/covid19_ct_seg_20cases_unlabelled
start=$(date +%s)
# Prepare both pools at both sizes first, so that no two processes fill the cache at once.
python3 -m stitchnet.cli prepare $L --preset cpu --quiet && python3 -m stitchnet.cli prepare $U --preset cpu --quiet
python3 -m stitchnet.cli prepare $L --preset paper --quiet && python3 -m stitchnet.cli prepare $U --preset paper --quiet
echo "prepared in $(( $(date +%s) - start )) s" | tee -a "$OUT/device.txt"
left=$(( LIMIT - ($(date +%s) - start) ))
paper() {  # name, then train arguments
  local name=$1; shift
  timeout $left python3 -m stitchnet.cli train --labelled $L --preset paper --quiet \
    --out runs/gpu/paper/$name $EPOCHS "$@" > runs/gpu/paper-$name.log 2>&1
}
mkdir -p runs/gpu/paper
paper unet --model unet --ssl none &
paper unet_fixmatch --model unet --ssl fixmatch --unlabelled $U &
paper skip_unimatch --model stitchnet-skip --ssl unimatch --unlabelled $U &
paper skip_unimatch_noelbo --model stitchnet-skip --ssl unimatch --ssl-set elbo_unlabelled=false \
  --unlabelled $U &
timeout $left python3 -m stitchnet.cli reproduce --preset cpu --out runs/gpu/cpu --jobs $JOBS \
  $EPOCHS $SEEDS --quiet > runs/gpu/reproduce.log 2>&1
echo "reproduce exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/device.txt"
wait
echo "all done after $(( $(date +%s) - start )) s" | tee -a "$OUT/device.txt"
# An unfinished comparison still gets a report of what finished.
python3 -m stitchnet.cli report runs/gpu/cpu >> runs/gpu/reproduce.log 2>&1
# Everything but checkpoints in one archive; the seed-0 best.pt of the recommended model and of
# the U-Net beside it, floats halved and cut into 15 MB parts ($OUT takes 16 MB files at most).
tar czf "$OUT/results.tgz" --exclude='*.pt' --exclude='tensorboard' runs/gpu
rec=$(python3 -c "import json;print(json.load(open('runs/gpu/cpu/recommended.json'))['variant'])" 2>/dev/null)
for v in $rec unet; do
  python3 -c "import sys; from stitchnet.checkpoint import save_half_copy; save_half_copy(*sys.argv[1:])" \
    runs/gpu/cpu/runs/$v/seed0/best.pt runs/gpu/$v.half.pt
  split -b 15M runs/gpu/$v.half.pt "$OUT/$v.half.pt.part-"
done
tail -5 runs/gpu/reproduce.log
ls -la "$OUT"
