#!/usr/bin/env bash
# Build the gapless image and smoke-test it: `gapless --help`, then about a minute of synthetic pretraining through
# the container's launcher (torchrun, SMOKE_NPROC processes) on synthetic slides, then the same run resumed from its
# checkpoint at iteration 10. Needs Docker with a running engine; uses the GPUs when the NVIDIA container toolkit
# is there, the CPU otherwise.   Usage: bash docker/build_and_smoke.sh   (what `make image` runs)
#
#   IMAGE=gapless:dev          tag to build (default gapless:latest)
#   SMOKE_NPROC=2              processes for the smoke run (default 2: exercises the multi-process rendezvous)
#   SMOKE_DIR=/tmp/x           where the smoke run writes (default: a fresh temporary folder, removed on success)
#   SMOKE_LOADER=synthetic     data.loader for the smoke run (default auto: the real pipeline on the synthetic slides)
#   SMOKE_TIMEOUT=600          seconds each pretraining run may take before the smoke test fails
#   SKIP_BUILD=1               test an image that is already built
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
IMAGE="${IMAGE:-gapless:latest}"
SMOKE_NPROC="${SMOKE_NPROC:-2}"
SMOKE_LOADER="${SMOKE_LOADER:-auto}"
SMOKE_TIMEOUT="${SMOKE_TIMEOUT:-600}"

fail() {
    echo "build_and_smoke: error: $*" >&2
    exit 1
}

command -v docker > /dev/null 2>&1 \
    || fail "the docker command is not installed; install Docker (https://docs.docker.com/engine/install/) and retry"
docker info > /dev/null 2>&1 \
    || fail "docker is installed but no Docker engine answers (is the daemon running, and may this user use it?)"

if [[ -z "${SKIP_BUILD:-}" ]]; then
    echo "== building ${IMAGE}"
    DOCKER_BUILDKIT=1 docker build -f docker/Dockerfile -t "${IMAGE}" .
fi

gpu_flags=()
if docker info --format '{{json .Runtimes}}' 2> /dev/null | grep -q nvidia || command -v nvidia-container-cli > /dev/null 2>&1; then
    gpu_flags=(--gpus all)
    echo "== NVIDIA container runtime found: the smoke run uses the GPUs"
else
    echo "== no NVIDIA container runtime: the smoke run uses the CPU"
fi

smoke_dir="${SMOKE_DIR:-$(mktemp -d -t gapless-smoke.XXXXXX)}"
mkdir -p "${smoke_dir}"
chmod 0777 "${smoke_dir}"  # written by the container's user, whatever its uid
run() {
    timeout --foreground "${SMOKE_TIMEOUT}" docker run --rm ${gpu_flags[@]+"${gpu_flags[@]}"} --ipc=host --user "$(id -u):$(id -g)" \
        -e GAPLESS_NPROC="${SMOKE_NPROC}" -v "${smoke_dir}:/runs" "${IMAGE}" "$@"
}

echo "== gapless --help"
run --help > "${smoke_dir}/help.txt" || fail "'gapless --help' failed in the image"
grep -q "pretrain" "${smoke_dir}/help.txt" || fail "'gapless --help' does not list pretrain:
$(cat "${smoke_dir}/help.txt")"

echo "== synthetic slides and their index"
run synth --out /runs/slides --preset tiny --seed 0
run index /runs/slides --out /runs/index.h5

# The tiny model, fed by the pipeline from the synthetic slides (DALI and the GPU when there is one).
pretrain() {
    run pretrain --config /opt/gapless/configs/pretrain_tiny_cpu.yaml \
        data.index=/runs/index.h5 "data.loader=${SMOKE_LOADER}" device=auto precision=auto \
        data.iterations_per_epoch=10 checkpoint.every=10 "$@" --out /runs/run
}
echo "== pretraining (${SMOKE_NPROC} processes under torchrun)"
start=${SECONDS}
pretrain epochs=2 || fail "pretraining failed (or ran over ${SMOKE_TIMEOUT} s) in the image"
ckpts="${smoke_dir}/run/checkpoints"
[[ -f "${ckpts}/ckpt_00000010.pt" && -f "${ckpts}/ckpt_00000020.pt" ]] \
    || fail "expected checkpoints at iterations 10 and 20 in ${ckpts}"
echo "== resuming: drop the last checkpoint, as if the job had died after iteration 10, and run again"
rm "${ckpts}/ckpt_00000020.pt"
pretrain epochs=2 || fail "resuming the pretraining run failed in the image"
[[ -f "${ckpts}/ckpt_00000020.pt" ]] || fail "the resumed run did not reach iteration 20 again"
echo "== pretraining took $((SECONDS - start)) s; run directory:"
ls -la "${smoke_dir}/run"

if [[ -z "${SMOKE_DIR:-}" ]]; then
    rm -rf "${smoke_dir}"
fi
echo "== smoke test passed: ${IMAGE}"
