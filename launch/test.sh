#!/usr/bin/env bash
# Creates or reuses .venv with the test extras, then runs the test suite (minus the tests marked
# slow, which take minutes each: `bash launch/test.sh -m slow` runs them, as CI does).
# Extra arguments go to pytest, e.g. `bash launch/test.sh -k config -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh dev
export WANDB_MODE=offline WANDB_SILENT=true

# The Slurm tests start a private cluster, installing Debian's packages as root when missing.
# Where they can do neither they are skipped, unless GANDIST_REQUIRE_SLURM=1 (as in CI): say so.
if [ "${GANDIST_REQUIRE_SLURM:-0}" != 1 ]; then
  missing=()
  for tool in munged slurmctld slurmd sbatch scontrol sinfo scancel; do
    PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" > /dev/null || missing+=("$tool")
  done
  if [ ${#missing[@]} -gt 0 ] && { [ "$(id -u)" != 0 ] || ! command -v apt-get > /dev/null; }; then
    echo "launch/test.sh: the Slurm tests will be skipped (no ${missing[*]}, and no root apt-get to install them); GANDIST_REQUIRE_SLURM=1 makes that a failure" >&2
  fi
fi
# -rs names every skipped test and why in the summary (a Slurm install that failed, no GPU).
select=(-m "not slow")
for arg in "$@"; do
  case "$arg" in -m | -m*) select=() ;; esac  # the caller chose the markers
done
exec .venv/bin/python -m pytest -q -rs "${select[@]}" "$@"
