#!/usr/bin/env bash
# Every GPU measurement of issues 7 and 16 in one command, results appended to CSVs in $1:
#   bash benchmarks/run_gpu.sh benchmarks/results            # all parts (about 25 minutes on one H200)
#   PARTS="engine fidelity" bash benchmarks/run_gpu.sh ...   # a subset of: engine fidelity families ablation
# engine:   ViT-B/16 last block, 128 features: baseline and every engine variant (regional compile,
#           whole-step compile, fused Adam, CUDA graphs), % of the bf16 peak, compile seconds apart
# fidelity: what each variant changes in the images and activations (vs fp32 and vs bf16 eager)
# families: one model per family of the paper preset, first/middle/last block, per-family table
# ablation: the Ray Data ablation pipeline's steady images/s against the bare classifier
# Each part writes as it goes, so a run cut short keeps what it measured.
set -u
out=${1:-benchmarks/results}
parts=${PARTS:-engine fidelity families ablation}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
day=$(date +%F)
tag=$($py -c "import torch; print(torch.cuda.get_device_name().split()[-1].lower() if torch.cuda.is_available() else 'cpu')")
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null
$py -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
variants="fp32 bf16 bf16+compile bf16+step bf16+step+fused bf16+step+graphs"
for part in $parts; do
  case $part in
    engine)
      $py benchmarks/bench_engine.py --models vit_base_patch16_224 --features 128 --warmup 3 --iters 5 \
          --variants $variants --csv "$out/$day-engine-$tag.csv" ;;
    fidelity)
      $py benchmarks/check_engine.py --csv "$out/$day-engine-fidelity-$tag.csv" ;;
    families)
      $py benchmarks/bench_engine.py --families --features 128 --warmup 3 --iters 5 \
          --variants bf16+compile bf16+step --csv "$out/$day-engine-$tag.csv" \
          --families-csv "$out/$day-families-$tag.csv" ;;
    ablation)
      $py benchmarks/bench_ablation.py --model deit_base_patch16_224.fb_in1k --images 512 --batch-size 128 \
          --csv "$out/$day-ablation-$tag.csv" ;;
    *) echo "unknown part $part (allowed: engine fidelity families ablation)" >&2; exit 2 ;;
  esac
done
