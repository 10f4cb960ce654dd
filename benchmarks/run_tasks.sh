#!/usr/bin/env bash
# The training results of benchmarks/segmentation.md and benchmarks/pointclouds.md: the
# three small EANet heads (EA, SDPA, none) on the composed Fashion-MNIST segmentation set,
# and the four point-cloud classifiers on the procedural point set, each model of a lane
# under the same wall-clock training budget, one thread per run.
#   usage: bash benchmarks/run_tasks.sh [FASHION_MNIST_DIR] [OUT] [LANE ...]
#   lanes: seg4, seg8 (segmentation, 4 / 8 minutes per model), seg2ep (2 epochs each,
#          the three at once: the same data whatever the load), points512 (512 points,
#          3 minutes), points256 (256 points, 4 minutes, PCT's neighbour embedding reduced
#          to 128 and 64 samples of 16 neighbours), partseg512 (part segmentation of the
#          procedural solids' 16 parts, 512 points, 4 minutes, the two models at once);
#          default: all, two at a time.
set -euo pipefail
fashion=${1:-../shared/data/fashion-mnist}
out=${2:-runs/tasks}
shift $(( $# < 2 ? $# : 2 ))
lanes=("$@")
mkdir -p "$out"
seg="$out/fashion-seg-64"
[ -f "$seg/classes.txt" ] || python -m beyond_attention.data.seg_compose "$seg" \
  --fashion "$fashion" --train 2000 --val 500 --size 64 --seed 0

seg_lane() {  # $1: minutes per model; $2: run-name prefix
  for m in eanet_resnet26_small eanet_resnet26_small_sdpa eanet_resnet26_small_noattn; do
    beyond-attention train --model "$m" --data "$seg" --crop-size 64 --batch-size 16 \
      --budget-minutes "$1" --limit-val 0 --threads 1 --log-every 100 --out "$out/$2-$m" \
      --overwrite
    beyond-attention evaluate "$out/$2-$m/best.safetensors" --eval-mode slide --json \
      > "$out/$2-$m/eval_slide.json"
  done
}
seg4() { seg_lane 4 seg; }
seg8() { seg_lane 8 seg8; }
seg2ep() {
  for m in eanet_resnet26_small eanet_resnet26_small_sdpa eanet_resnet26_small_noattn; do
    beyond-attention train --model "$m" --data "$seg" --crop-size 64 --batch-size 16 \
      --epochs 2 --limit-val 0 --threads 1 --log-every 100 --out "$out/seg2ep-$m" \
      --overwrite > "$out/seg2ep-$m.log" 2>&1 &
  done
  wait
}
points512() {
  for m in pct pct_ea spct npct; do
    beyond-attention train --model "$m" --dataset procedural-points --num-points 512 \
      --batch-size 32 --budget-minutes 3 --limit-val 0 --threads 1 --log-every 20 \
      --out "$out/points-$m" --overwrite
  done
}
points256() {
  for m in pct pct_ea spct npct; do
    extra=()
    case $m in pct|pct_ea) extra=(--model-arg 'samples=[128,64]' --model-arg k=16) ;; esac
    beyond-attention train --model "$m" --dataset procedural-points --num-points 256 \
      --batch-size 16 --budget-minutes 4 --limit-val 0 --threads 1 --log-every 20 \
      "${extra[@]}" --out "$out/points256-$m" --overwrite
  done
}
partseg512() {
  for m in pct_partseg pct_ea_partseg; do
    beyond-attention train --model "$m" --dataset procedural-points --num-points 512 \
      --batch-size 16 --budget-minutes 4 --limit-val 0 --threads 1 --log-every 20 \
      --out "$out/partseg-$m" --overwrite > "$out/partseg-$m.log" 2>&1 &
  done
  wait
}
if [ ${#lanes[@]} -eq 0 ]; then
  seg4 > "$out/seg.log" 2>&1 & points512 > "$out/points.log" 2>&1 & wait
  seg8 > "$out/seg8.log" 2>&1 & points256 > "$out/points256.log" 2>&1 & wait
  partseg512 > "$out/partseg512.log" 2>&1
else
  for lane in "${lanes[@]}"; do "$lane" > "$out/$lane.log" 2>&1 & done
  wait
fi
