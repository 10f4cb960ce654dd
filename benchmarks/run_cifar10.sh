#!/usr/bin/env bash
# The first CIFAR-10 results (benchmarks/cifar10.md): the small-image model of each family
# under one equal budget (the same 15,000-image training subset for 2 epochs, the same
# recipe), validated on 5,000 test images. Two lanes of one thread each share 2 cores.
#   usage: bash benchmarks/run_cifar10.sh [DATA] [OUT]
set -euo pipefail
data=${1:-../shared/data/cifar10-jpg.tar.gz}
out=${2:-runs/cifar10}
common=(--data "$data" --limit-train 15000 --limit-val 5000 --epochs 2 --batch-size 64
        --lr 1e-3 --warmup 0.3 --threads 1 --quiet --resume)

lane_a() {
  beyond-attention train --model vit_tiny_cifar --out "$out/vit_tiny_cifar" "${common[@]}"
  beyond-attention train --model eamlp_cifar --out "$out/eamlp_cifar" "${common[@]}"
  beyond-attention train --model vit_tiny_cifar --data ../shared/data/fashion-mnist \
    --out "$out/fashion_mnist_vit_tiny_cifar" "${common[@]:2}"
}
lane_b() {
  beyond-attention train --model vit_tiny_cifar --model-arg 'mixer="external"' \
    --out "$out/vit_tiny_cifar_external" "${common[@]}"
  beyond-attention train --model lavit_tiny_cifar --out "$out/lavit_tiny_cifar" "${common[@]}"
  beyond-attention train --model lambda_resnet26_cifar --out "$out/lambda_resnet26_cifar" \
    "${common[@]}"
}
lane_a > "$out.lane_a.log" 2>&1 &
lane_b > "$out.lane_b.log" 2>&1 &
wait
