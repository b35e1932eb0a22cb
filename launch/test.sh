#!/usr/bin/env bash
# Creates or reuses .venv with the test extras, then runs the test suite.
# Extra arguments go to pytest, e.g. `bash launch/test.sh -k config -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh dev
export WANDB_MODE=offline WANDB_SILENT=true
exec .venv/bin/python -m pytest -q "$@"
