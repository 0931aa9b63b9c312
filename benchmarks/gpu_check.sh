#!/usr/bin/env bash
# The project's GPU check, for a machine with CUDA, DALI and cuCIM importable. Keeps going past a failing or
# overrunning part, so one run yields all that can be measured:
#   bench:    `gapless bench --quick` with equal workers and GPU-sized windows: the DALI GPU graph fed by host
#             decoding (dali), by batched nvImageCodec GPU decoding (dali-gpudecode) and by DALI's decoder on tiles
#             the workers read (dali-dalidecode), and the DataLoader baseline, each under DU and CU; peak GPU memory;
#   cuslide2: the same bench for the graph fed by cuCIM's cuslide2 plugin (dali-cuslide2), in a run of its own
#             started with ENABLE_CUSLIDE2=1 (cuCIM picks its plugin once per process);
#   trainer:  ViT-S/16 images/s on synthetic data (what it consumes) and through the DALI pipeline (data wait);
#   tests:    the GPU-marked tests (GPU reads, DALI GPU graph vs its CPU twin, GPU features);
#   decode:   which JPEG decoder batched reads should use (nvImageCodec backends, cuslide2, DALI's nvJPEG) and
#             the CPU cost of the check of each tile's data;
#   reads:    region reads per second of every backend, GPU decodes included;
#   xformers: SDPA vs xFormers attention in bf16, with MFU.
# Results: at most 8 files under $OUT (default runs/gpu-check): summary.log, bench.json, bench-cuslide2.json,
# trainer.json and gpu-check.tar.gz (every log, plot and figure). Work files go to $WORK (default /tmp/gapless-gpu-check).
# The parts' time limits add up to 560 s, so the whole check fits one 10-minute command.
# Usage: bash benchmarks/gpu_check.sh   (PYTHON=... interpreter; WORKERS=8; PARTS="tests bench" runs some parts;
#        GPU_CHECK_CPU=1 tries it without CUDA)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu-check}
work=${WORK:-/tmp/gapless-gpu-check}
py=${PYTHON:-python3}
workers=${WORKERS:-8}
parts=${PARTS:-bench cuslide2 trainer tests decode reads xformers}  # which parts to run, e.g. PARTS="tests bench"
mkdir -p "$out" "$work"
summary=$out/summary.log
status=0
log() { echo "$*" | tee -a "$summary"; }
run() {  # name, seconds, command...: log to $work/name.log, stop it after `seconds`, remember failures
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  log "== $name (limit ${limit}s): $*"
  timeout -k 10 "$limit" "$@" > "$work/$name.log" 2>&1
  local rc=$?
  [ "$rc" -ne 0 ] && { status=1; log "   $name: exit $rc$([ "$rc" -eq 124 ] && echo ' (time limit)')"; }
  log "   $name took $((SECONDS - t0)) s"
  tail -n 40 "$work/$name.log" | tee -a "$summary"
}
if [ -z "${GPU_CHECK_CPU:-}" ]; then
  "$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" \
    || { echo "gpu_check: $py cannot use a CUDA device (torch with CUDA needed)" >&2; exit 2; }
fi
export PYTHONUNBUFFERED=1
log "== machine: $(date -u +%FT%TZ), $(nproc) cores"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$summary"
"$py" - <<'EOF' 2>&1 | tee -a "$summary"
import importlib
for name in ("torch", "nvidia.dali", "cucim", "cupy", "numpy", "cv2", "xformers"):
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except Exception as exc:
        print(f"{name}: not importable ({type(exc).__name__}: {exc})")
EOF
want() { [[ " $parts " == *" $1 "* ]]; }
# Measurement windows sized for a GPU machine: the quick preset's 4 batches of 8 drain a prefetch queue too fast.
bench_args=("workers=$workers" "scaling_workers=[$workers]" batch_size=32 batches_per_repeat=8 repeats=4 passes=2
            trainer=false)
want bench && run bench 170 "$py" -m gapless.cli bench --quick --out "$work/bench" --cache-dir "$work/cache" \
  "loaders=[dali,dali-gpudecode,dali-dalidecode,baseline]" "${bench_args[@]}"
cp -f "$work/bench/bench.json" "$out/" 2>/dev/null  # now, in case a later part overruns the caller's limit
nvimgcodec=$("$py" -c "import nvidia.nvimgcodec, os; print(os.path.dirname(nvidia.nvimgcodec.__file__))" 2>/dev/null)
want cuslide2 && ENABLE_CUSLIDE2=1 LD_LIBRARY_PATH="$nvimgcodec${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  run cuslide2 55 "$py" -m gapless.cli bench --quick --out "$work/bench-cuslide2" --cache-dir "$work/cache" \
  "loaders=[dali-cuslide2]" "scaling_loaders=[]" synthetic=false stage_tiles=0 "${bench_args[@]}"
cp -f "$work/bench-cuslide2/bench.json" "$out/bench-cuslide2.json" 2>/dev/null
index=$(ls "$work"/cache/*/index.h5 2>/dev/null | head -n 1)
want trainer && run trainer 80 "$py" -m gapless.benchmarks.train_step --model vits16 --steps 10 ${index:+--index "$index"} \
  "data.workers=$workers" --out "$work/trainer.json"
cp -f "$work/trainer.json" "$out/" 2>/dev/null
want tests && run gpu-tests 60 "$py" -m pytest -q -m gpu -p no:cacheprovider tests
want decode && run decode 45 "$py" -m gapless.benchmarks.gpu_decode
want reads && run reads 70 "$py" -m gapless.benchmarks.reads --cuda --seconds 0.5
want xformers && run xformers 80 "$py" -m gapless.benchmarks.train_step --gpu --model vits16 --steps 10 --out "$work/attention.json"
cp -f "$work/bench/bench.json" "$work/trainer.json" "$work/attention.json" "$out/" 2>/dev/null
tar -czf "$out/gpu-check.tar.gz" -C "$work" --exclude=cache . 2>/dev/null
log "== gpu_check: exit $status"
exit $status
