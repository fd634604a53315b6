#!/usr/bin/env bash
# The GPU check: tiny in-process models, plus the embedded SmolLM2 when it is already cached; no network,
# no model download. At most 8 minutes on one GPU. `--cpu` runs the same checks on CPU in fp32 with the CUDA-only
# parts (bf16 on CUDA, flash-attention-2, SmolLM2 throughput) skipped; it takes under a minute and runs in CI.
# Its decode step (tests/gpu/test_gpu_decode.py) times our decode loop against `generate` from the same trace
# (bench/b7_decode.py), the greedy tokens checked equal.
#   scripts/gpu_check.sh          # on a machine with CUDA; paste its output into docs/performance.md
#   scripts/gpu_check.sh --cpu    # anywhere
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[[ -x $PY ]] || PY=python
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [[ ${1:-} == "--cpu" ]]; then
  export DIFFMAS_GPU_CHECK_DEVICE=cpu OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  limit=240
else
  export DIFFMAS_GPU_CHECK_DEVICE=cuda
  limit=480
  if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device here; run with --cpu for the CPU part" >&2
    exit 2
  fi
  $PY -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
fi
$PY -c "import transformers; print('transformers', transformers.__version__)"
timeout "$limit" $PY -m pytest tests/gpu -m gpu -q -s -rs -p no:cacheprovider
rc=$?
[[ $rc -eq 124 ]] && echo "gpu_check: over its ${limit}s budget" >&2
exit $rc
