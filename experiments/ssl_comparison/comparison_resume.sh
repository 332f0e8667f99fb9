#!/usr/bin/env bash
# Run 2 of the comparison on one GPU: finish what run 1 (experiments/ssl_comparison/comparison.sh) left.
# Carry run 1's runs/gpu (run folders without weights) and run, side by side:
#   1. `reproduce --preset cpu` on runs/gpu/cpu: it resumes, so only the unfinished main runs
#      train, then the recommended model is chosen on validation, then the label-efficiency runs
#      (5 and 15 slices) and the calibration of the runs whose weights are here;
#   2. the default model of `stitchnet segment`: `stitchnet train` without --model on the bundled
#      data at the cpu preset (the recommended configuration), and its calibration;
#   3. the `paper` preset (352 px) of the recommended model, seed 0, stopped at the time limit and
#      then tested on its best validated epoch (rerunning with --epochs K resumes and finishes);
#      and of the supervised U-Net, seeds 1 and 2 (seed 0 is from run 1);
#   4. a method tried for the targets: the recommended model with class-aware thresholds
#      (lesion classes kept at confidence 0.8 instead of 0.95), 3 seeds on the same split.
#   PYTHONPATH=$PWD LIMIT=520 bash experiments/ssl_comparison/comparison_resume.sh
set -u
OUT=${OUT:-gpu-out}
LIMIT=${LIMIT:-520}
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$OUT" runs/gpu/paper runs/gpu/tried
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/device.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" >> "$OUT/device.txt"
L=data/medseg_covid19_train50
U=data/covid19_ct_seg_20cases_unlabelled
CLI="python3 -m stitchnet.cli"
start=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - start) )); }
$CLI prepare $L --preset cpu --quiet && $CLI prepare $U --preset cpu --quiet
echo "cpu preset prepared in $(( $(date +%s) - start )) s" | tee -a "$OUT/device.txt"

timeout $(left) $CLI reproduce --preset cpu --out runs/gpu/cpu --jobs 10 --quiet \
  > runs/gpu/reproduce2.log 2>&1 &
repro=$!
timeout $(left) $CLI train --labelled $L --unlabelled $U --preset cpu --out runs/gpu/default-rec \
  --quiet > runs/gpu/default-rec.log 2>&1 &
for s in 0 1 2; do
  d=runs/gpu/tried/skip_unimatch_cw/seed$s
  mkdir -p $d && cp runs/gpu/cpu/splits.json $d/
  timeout $(left) $CLI train --labelled $L --unlabelled $U --preset cpu --seed $s --out $d \
    --model stitchnet-skip --ssl unimatch --ssl-set 'class_thresholds=[0.95,0.95,0.8,0.8]' \
    --quiet > $d.log 2>&1 &
done
(
  $CLI prepare $L --preset paper --quiet
  for s in 1 2; do
    timeout $(left) $CLI train --labelled $L --preset paper --model unet --ssl none --seed $s \
      --out runs/gpu/paper/unet_seed$s --quiet > runs/gpu/paper-unet_seed$s.log 2>&1 &
  done
  $CLI prepare $U --preset paper --quiet
  echo "paper preset prepared after $(( $(date +%s) - start )) s" >> "$OUT/device.txt"
  d=runs/gpu/paper/skip_unimatch_seed0
  timeout $(( $(left) - 70 )) $CLI train --labelled $L --unlabelled $U --preset paper \
    --out $d --quiet > $d.log 2>&1
  k=$(python3 -c "import torch;print(torch.load('$d/last.pt',map_location='cpu',weights_only=False)['epoch'])")
  echo "paper recommended stopped after epoch ${k:-none} of 80 at $(( $(date +%s) - start )) s" \
    | tee -a "$OUT/device.txt"
  [ -n "$k" ] && $CLI train --labelled $L --unlabelled $U --preset paper --out $d --epochs "$k" \
    --quiet >> $d.log 2>&1
  wait
) &
paper=$!
wait $repro
echo "reproduce exit $? after $(( $(date +%s) - start )) s" | tee -a "$OUT/device.txt"
wait
echo "all done after $(( $(date +%s) - start )) s" | tee -a "$OUT/device.txt"
python3 experiments/ssl_comparison/calibration.py runs/gpu/default-rec > "$OUT/calibration-default-rec.md" 2>&1
# Calibration of whatever finished, also where reproduce was stopped before its own last stage.
python3 -c "
from pathlib import Path; from stitchnet.study.calibration import calibrate_runs
dirs = sorted(Path('runs/gpu/cpu').glob('efficiency/*/n*/seed*'))
dirs += sorted(Path('runs/gpu/cpu').glob('runs/*/seed*')) + sorted(Path('runs/gpu/tried').glob('*/seed*'))
print('calibrated', calibrate_runs(dirs, '$L'))" >> runs/gpu/reproduce2.log 2>&1
python3 -m stitchnet.cli report runs/gpu/cpu >> runs/gpu/reproduce2.log 2>&1
tar czf "$OUT/results.tgz" --exclude='*.pt' --exclude='tensorboard' --exclude='figures' \
  --exclude='report.html' runs/gpu
python3 -c "import sys; from stitchnet.checkpoint import save_half_copy; save_half_copy(*sys.argv[1:])" \
    runs/gpu/default-rec/best.pt runs/gpu/default-rec.half.pt
split -b 15M runs/gpu/default-rec.half.pt "$OUT/default-rec.half.pt.part-"
tail -3 runs/gpu/reproduce2.log
ls -la "$OUT"
