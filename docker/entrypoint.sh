#!/usr/bin/env bash
# Container entrypoint (also installed as `gapless-launch`, for SLURM/pyxis and Apptainer, which do not run the
# image's entrypoint by themselves). The launch logic lives in launch.py, next to this file, where it is tested:
# `pretrain` goes through torchrun with one process per visible GPU; every other command runs as plain `gapless`.
set -euo pipefail

# Run directories on a shared /runs volume stay writable for the group that owns them.
umask 0002

here="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
exec "${GAPLESS_PYTHON:-python3}" "${here}/launch.py" "$@"
