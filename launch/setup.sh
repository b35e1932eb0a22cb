#!/usr/bin/env bash
# Creates or reuses .venv and installs gandist with the pinned, tested versions.
# Usage: source-free; `bash launch/setup.sh [EXTRAS]` (EXTRAS e.g. "dev"; default none).
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
venv="${GANDIST_VENV:-.venv}"
python="${PYTHON:-python3}"

# The Python version first: the pinned numpy and scipy have no wheels for older ones, and pip's
# own error then says nothing about why. The minimum is pyproject.toml's requires-python.
need="$(sed -n 's/^requires-python = ">=\([0-9.]*\)".*/\1/p' pyproject.toml)"
candidate="$python"
[ -x "$venv/bin/python" ] && candidate="$venv/bin/python"  # an existing venv keeps its Python
have="$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)"
if [ -z "$have" ] || [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]; then
  hint="set PYTHON=python$need (or newer)"
  [ "$candidate" != "$python" ] && hint="remove $venv and $hint"
  echo "gandist setup: error: gandist needs Python >= $need, but $candidate is ${have:-not a working Python}; $hint" >&2
  exit 2
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "gandist setup: creating $venv with $("$python" --version)"
  "$python" -m venv "$venv"
fi

# Re-install only when what decides the install changed: the stamp records it.
spec="."
[ -n "$extras" ] && spec=".[$extras]"
want="$(cat pyproject.toml launch/constraints.txt | sha256sum | cut -c1-16) $spec"
stamp="$venv/.gandist-install"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "gandist setup: $venv is up to date"
  exit 0
fi

echo "gandist setup: installing $spec into $venv (torch is large: a few minutes the first time)"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -c launch/constraints.txt -e "$spec"
echo "$want" > "$stamp"
echo "gandist setup: done"
