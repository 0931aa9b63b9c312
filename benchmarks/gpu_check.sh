#!/usr/bin/env bash
# The project's GPU check, for a machine with CUDA, DALI and cuCIM importable (see ../shared/device/README.md for a
# machine without package-registry access). Writes every figure under $OUT (default runs/gpu-check) and keeps
# going past a failing part, so one run yields all that can be measured:
#   1. the GPU-marked tests (cuCIM GPU reads, DALI GPU graph vs its CPU twin, GPU features);
#   2. region reads per second with cuCIM's GPU decode beside the CPU backends;
#   3. `gapless bench --quick`: DALI-GPU vs the DataLoader baselines, DU vs CU, peak GPU memory;
#   4. the trainer: ViT-S/16 images/s, SDPA vs xFormers in bf16, MFU.
# Usage: bash benchmarks/gpu_check.sh   (PYTHON=... to choose the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu-check}
py=${PYTHON:-python3}
mkdir -p "$out"
status=0
run() {  # name, command...: log to $out/name.log, remember failures
  local name=$1; shift
  echo "== $name: $*"
  if ! "$@" > "$out/$name.log" 2>&1; then echo "   failed (see $out/$name.log)"; status=1; fi
  tail -n 25 "$out/$name.log"
}
"$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" \
  || { echo "gpu_check: $py cannot use a CUDA device (torch with CUDA needed)" >&2; exit 2; }
run gpu-tests "$py" -m pytest -q -m gpu tests
run reads "$py" -m pipeline.slides.bench_reads --cuda --seconds 2
run bench "$py" -m gapless.cli bench --quick --out "$out/bench"
run trainer "$py" -m train.bench_step --gpu --model vits16 --out "$out/trainer.json"
exit $status
