#!/usr/bin/env bash
# The main job: set up .venv if needed, then run `diffmas demo` on the embedded SmolLM2 and an offline task.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/diffmas demo "$@"
