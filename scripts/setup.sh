#!/usr/bin/env bash
# Create .venv and install diffmas with its dev tools. Idempotent: reinstalls only when pyproject.toml changed.
# torch is pinned first so pip takes the CPU wheel (a looser pin would pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.diffmas-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "[setup] installing torch==2.13.0 and diffmas[dev] (first run takes a few minutes)"
  log=.venv/pip-install.log
  {
    .venv/bin/python -m pip install --upgrade pip &&
      .venv/bin/python -m pip install "torch==2.13.0" &&
      .venv/bin/python -m pip install -e ".[dev]"
  } > "$log" 2>&1 || { tail -n 40 "$log"; echo "[setup] pip failed; full log in $log" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
