#!/usr/bin/env bash
# The mixer study (benchmarks/cifar10.md): every token mixer in the vit_tiny_cifar backbone
# and the paper models' CIFAR variants, each trained for the same wall-clock budget on the
# full CIFAR-10 training set, 3 seeds (or SEEDS), tested on the CIFAR-10 test set. Two
# lanes of one thread each share the 2 cores; each run is claimed by one lane, and a rerun
# resumes.
#   usage: bash benchmarks/run_study.sh [MINUTES] [LIMIT_VAL] [DATA] [OUT] [SEEDS]
set -euo pipefail
minutes=${1:-15}
limit_val=${2:-0}
data=${3:-../shared/data/cifar10-jpg.tar.gz}
out=${4:-runs/study-${minutes}min}
seeds=${5:-3}
common=(--out "$out" --budget-minutes "$minutes" --seeds "$seeds" --data "$data"
        --limit-train 0 --limit-val "$limit_val" --threads 1 --device cpu)
mkdir -p "$out"
beyond-attention study "${common[@]}" > "$out/lane_a.log" 2>&1 &
sleep 2
beyond-attention study "${common[@]}" > "$out/lane_b.log" 2>&1 &
wait
beyond-attention study "${common[@]}"  # every run is done: the summary, table and plot
