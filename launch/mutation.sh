#!/usr/bin/env bash
# Mutation testing (mutmut 3) of the pure modules against their unit tests. Not part of CI: it
# runs each module's tests once per mutant (minutes per module on 2 cores), niced, one at a time.
#
#   bash launch/mutation.sh                  # every module below
#   bash launch/mutation.sh losses schedules # some of them
#
# mutmut lives in its own venv ($MUTMUT_VENV, default .mutvenv) so it changes no pin of the
# project venv ($GANDIST_VENV, default .venv), whose packages (torch, ...) it sees through a
# .pth file. Each module runs in a scratch copy of the work tree; the per-module score
# (killed / mutants) and the surviving mutants' diffs go to $OUT (default mutation-report/).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${GANDIST_VENV:-$ROOT/.venv}
MUTVENV=${MUTMUT_VENV:-$ROOT/.mutvenv}
OUT=${OUT:-$ROOT/mutation-report}
MUTMUT_VERSION=3.8.1

CONFIG_TESTS="tests/test_config.py tests/test_config_messages.py tests/test_config_sections.py \
tests/test_readme.py::test_config_reference_is_generated_from_the_dataclasses_and_linked \
tests/test_readme_features.py::test_gandist_config_prints_the_resolved_config_and_the_reference"
CONFIG_LEFT_OUT="tests/test_config.py::test_train_entry_exits_2_on_typo_before_any_process_group \
tests/test_config.py::test_preflight_rejects_uneven_batch_missing_shards_and_cpu_fp16 \
tests/test_config.py::test_existing_run_needs_resume_or_a_new_output_dir"

# module -> "file to mutate | mutant name patterns ('' = all) | its unit tests | tests left out"
declare -A MODULES=(
  [losses]="gandist/losses.py||tests/test_losses.py tests/test_training_parts.py|"
  [augment]="gandist/augment.py||tests/test_training_parts.py|"
  [ema]="gandist/ema.py||tests/test_training_parts.py|"
  [schedules]="gandist/schedules.py||tests/test_training_parts.py|"
  # The loader, its messages and the reference table, then each section's own checks and the
  # cross-section name checks (gandist/training/config.py). Left out: the tests that start a
  # training process or a Trainer, which take seconds per mutant and test other modules too.
  [config]="gandist/config.py||$CONFIG_TESTS|$CONFIG_LEFT_OUT"
  [data-config]="gandist/data/config.py||$CONFIG_TESTS|$CONFIG_LEFT_OUT"
  [models-config]="gandist/models/config.py||$CONFIG_TESTS|$CONFIG_LEFT_OUT"
  [metrics-config]="gandist/metrics/config.py||$CONFIG_TESTS|$CONFIG_LEFT_OUT"
  [training-config]="gandist/training/config.py||$CONFIG_TESTS|$CONFIG_LEFT_OUT"
)
ORDER=(losses augment ema schedules config data-config models-config metrics-config training-config)

if [ $# -gt 0 ]; then ORDER=("$@"); fi
for name in "${ORDER[@]}"; do
  if [ -z "${MODULES[$name]+x}" ]; then
    echo "unknown module '$name'; choose from: ${!MODULES[*]}" >&2
    exit 2
  fi
done
if [ ! -x "$VENV/bin/python" ]; then
  echo "no project venv at $VENV (run launch/setup.sh, or set GANDIST_VENV)" >&2
  exit 2
fi

if [ ! -x "$MUTVENV/bin/mutmut" ]; then
  "$VENV/bin/python" -m venv "$MUTVENV"
  "$MUTVENV/bin/pip" install -q "mutmut==$MUTMUT_VERSION" -c "$ROOT/launch/constraints.txt"
fi
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mutsite=$("$MUTVENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# A plain path line: the project venv's packages, but not its editable gandist (the mutants win).
echo "$site" > "$mutsite/gandist-project-venv.pth"

mkdir -p "$OUT"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for name in "${ORDER[@]}"; do
  IFS='|' read -r file names tests left_out <<< "${MODULES[$name]}"
  work="$scratch/$name"
  mkdir -p "$work"
  tar -C "$ROOT" -cf - gandist tests configs docs pyproject.toml README.md | tar -C "$work" -xf -
  {
    echo "[mutmut]"
    echo "source_paths=gandist"
    echo "only_mutate=$file"
    echo "also_copy="
    echo "    configs"
    echo "    docs"
    echo "    README.md"
    echo "pytest_add_cli_args="
    echo "    -p"
    echo "    no:cacheprovider"
    for t in $left_out; do echo "    --deselect"; echo "    $t"; done
    echo "pytest_add_cli_args_test_selection="
    for t in $tests; do echo "    $t"; done
  } > "$work/setup.cfg"
  echo "== $name: mutating $file, tests: $tests"
  start=$(date +%s)
  (
    cd "$work"
    export WANDB_MODE=offline WANDB_SILENT=true
    set -f  # the mutant name patterns are for mutmut, not for the shell
    # shellcheck disable=SC2086
    if ! nice -n 19 "$MUTVENV/bin/mutmut" run --max-children 1 $names > "$OUT/$name.log" 2>&1; then
      echo "mutmut failed on $name (a test fails on the unmutated code?): see $OUT/$name.log" >&2
      exit 1
    fi
    set +f
    "$MUTVENV/bin/mutmut" export-cicd-stats > /dev/null
    cp mutants/mutmut-cicd-stats.json "$OUT/$name.json"
    : > "$OUT/$name-survivors.txt"
    for mutant in $("$MUTVENV/bin/mutmut" results 2>/dev/null | awk -F: '/: (survived|no tests)/ {print $1}'); do
      "$MUTVENV/bin/mutmut" show "$mutant" >> "$OUT/$name-survivors.txt" 2>&1
    done
  )
  "$VENV/bin/python" - "$OUT/$name.json" "$name" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
stats = json.load(open(sys.argv[1]))
# "total" also counts the mutants a name filter left unchecked: score the checked ones only.
killed = stats["killed"] + stats["timeout"] + stats["segfault"]
checked = killed + stats["survived"] + stats["no_tests"] + stats["suspicious"]
print(f"{sys.argv[2]}: {killed}/{checked} killed ({100 * killed / max(checked, 1):.0f}%), "
      f"survived {stats['survived']}, no tests {stats['no_tests']}, {sys.argv[3]} s")
PY
done
