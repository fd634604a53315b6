#!/usr/bin/env bash
# The GPU check (docs/gpu.md): runs on the lent machine's bare image, on any .venv, or on CPU.
#   1. the Python: $DIFFMAS_PYTHON, else .venv/bin/python, else python3; src/ and the repo root go first on
#      PYTHONPATH (diffmas need not be installed);
#   2. --wheels DIR: the carried wheels (scripts/fetch_gpu_wheels.py) installed with pip --no-index --no-deps into
#      a fresh folder put on PYTHONPATH before the image's own packages;
#   3. every import checked up front (scripts/gpu_preflight.py: exits 3 naming each missing or too-old package),
#      then device, driver, torch, transformers, peft and accelerate versions printed;
#   4. tests/gpu (tiny in-process models, plus the embedded SmolLM2 when already cached; no network), then
#      bench/paper_scale.py (the paper's model shapes with random weights).
# On CUDA at most 8 minutes on an H100. `--cpu` runs the same code on CPU in fp32 with the CUDA-only parts skipped
# and paper_scale on a scaled-down configuration; about a minute; CI runs it (scripts/gpu_rehearsal.sh too).
#   scripts/gpu_check.sh --wheels .whl     # on the lent machine: paste its output into docs/performance.md
#   DIFFMAS_GPU_CHECK_OUT=DIR ...          # also write paper_scale's figures to DIR/paper_scale.json
#   scripts/gpu_check.sh --cpu             # anywhere
set -uo pipefail
cd "$(dirname "$0")/.."
cpu=0 wheels=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --cpu) cpu=1 ;;
    --wheels) wheels=${2:?--wheels needs a folder}; shift ;;
    *) echo "gpu_check: unknown argument $1 (use --cpu, --wheels DIR)" >&2; exit 2 ;;
  esac
  shift
done
PY=${DIFFMAS_PYTHON:-}
[[ -z $PY && -x .venv/bin/python ]] && PY=.venv/bin/python
[[ -z $PY ]] && PY=python3
command -v "$PY" > /dev/null || { echo "gpu_check: no Python at '$PY'" >&2; exit 2; }
path=$PWD/src:$PWD
if [[ -n $wheels ]]; then
  site=${TMPDIR:-/tmp}/diffmas-gpu-site
  rm -rf "$site"
  shopt -s nullglob
  files=("$wheels"/*.whl)
  [[ ${#files[@]} -gt 0 ]] || { echo "gpu_check: no wheels in $wheels (scripts/fetch_gpu_wheels.py)" >&2; exit 2; }
  start=$SECONDS
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
    --target "$site" "${files[@]}" || { echo "gpu_check: installing $wheels failed" >&2; exit 2; }
  echo "gpu_check: ${#files[@]} wheels from $wheels installed in $((SECONDS - start)) s"
  path=$path:$site
fi
export PYTHONPATH=$path${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [[ $cpu == 1 ]]; then
  export DIFFMAS_GPU_CHECK_DEVICE=cpu OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  device=cpu limit=300
else
  export DIFFMAS_GPU_CHECK_DEVICE=cuda
  device=cuda limit=480
fi
"$PY" scripts/gpu_preflight.py --device "$device" || exit $?
begin=$SECONDS
timeout "$limit" "$PY" -m pytest tests/gpu -m gpu -q -s -rs -p no:cacheprovider
rc=$?
if [[ $rc -eq 0 ]]; then
  left=$((limit - (SECONDS - begin)))
  bench_args=(--budget $((left - 15)))
  [[ $cpu == 1 ]] && bench_args+=(--cpu)
  [[ -n ${DIFFMAS_GPU_CHECK_OUT:-} ]] && bench_args+=(--json "$DIFFMAS_GPU_CHECK_OUT/paper_scale.json")
  timeout "$left" "$PY" -m bench.paper_scale "${bench_args[@]}"
  rc=$?
fi
[[ $rc -eq 124 ]] && echo "gpu_check: over its ${limit}s budget" >&2
echo "gpu_check: $((SECONDS - begin)) s for the tests and paper_scale on $device (rc $rc)"
exit $rc
