#!/usr/bin/env bash
# The training results of benchmarks/segmentation.md and benchmarks/pointclouds.md: the
# three small EANet heads (EA, SDPA, none) on the composed Fashion-MNIST segmentation set,
# and the four point-cloud classifiers on the procedural point set, each under the same
# wall-clock training budget. Two lanes of one thread each share two cores.
#   usage: bash benchmarks/run_tasks.sh [FASHION_MNIST_DIR] [OUT]
set -euo pipefail
fashion=${1:-../shared/data/fashion-mnist}
out=${2:-runs/tasks}
mkdir -p "$out"
seg="$out/fashion-seg-64"
[ -f "$seg/classes.txt" ] || python -m beyond_attention.data.seg_compose "$seg" \
  --fashion "$fashion" --train 2000 --val 500 --size 64 --seed 0

seg_lane() {
  for m in eanet_resnet26_small eanet_resnet26_small_sdpa eanet_resnet26_small_noattn; do
    beyond-attention train --model "$m" --data "$seg" --crop-size 64 --batch-size 16 \
      --budget-minutes 4 --limit-val 0 --threads 1 --log-every 100 --out "$out/seg-$m" \
      --overwrite
    beyond-attention evaluate "$out/seg-$m/best.safetensors" --eval-mode slide --json \
      > "$out/seg-$m/eval_slide.json"
  done
}
point_lane() {
  for m in pct pct_ea spct npct; do
    beyond-attention train --model "$m" --dataset procedural-points --num-points 512 \
      --batch-size 32 --budget-minutes 3 --limit-val 0 --threads 1 --log-every 20 \
      --out "$out/points-$m" --overwrite
  done
}
seg_lane > "$out/seg.log" 2>&1 &
point_lane > "$out/points.log" 2>&1 &
wait
