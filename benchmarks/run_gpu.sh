#!/usr/bin/env bash
# The issue-7 GPU measurements in one command (about 6 minutes on one H200), results to $1.
#   bash benchmarks/run_gpu.sh benchmarks/results
set -u
out=${1:-benchmarks/results}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
day=$(date +%F)
tag=$($py -c "import torch; print(torch.cuda.get_device_name().split()[-1].lower())")
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
$py -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
$py benchmarks/bench_engine.py --models vit_base_patch16_224 --features 128 --warmup 2 --iters 5 \
    --csv "$out/$day-engine-$tag.csv"
$py benchmarks/check_engine.py --csv "$out/$day-engine-fidelity-$tag.csv"
$py benchmarks/bench_engine.py --models vit_tiny_patch16_224 swin_tiny_patch4_window7_224 --features 128 \
    --warmup 2 --iters 5 --csv "$out/$day-engine-$tag.csv"
