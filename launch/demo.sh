#!/usr/bin/env bash
# One command from a fresh machine to a trained GAN: sets up .venv, writes the built-in glyph
# shards, trains a DCGAN on every local GPU (or in one process on a CPU-only machine: see the
# README's "The demo"), and prints the final scores and where the outputs are. Re-running reuses
# the venv and the shards.
# Extra arguments are config overrides, e.g. `bash launch/demo.sh train.steps=500`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash launch/setup.sh
venv="${GANDIST_VENV:-.venv}"  # where launch/setup.sh put it
gandist="$venv/bin/gandist"

# GANDIST_DEMO_GLYPHS: fewer glyphs for a quick check of the script (tests/test_demo.py).
if [ ! -f data/glyphs/manifest.json ]; then
  "$gandist" data synth glyphs --out data/glyphs --num "${GANDIST_DEMO_GLYPHS:-20000}" --size 32
fi
# FID/KID/IS in the feature space of a small glyph classifier (InceptionV3 weights can't be
# downloaded offline, and don't suit 32 px grayscale digits).
if [ ! -f data/glyph-extractor.pt ]; then
  "$gandist" metrics train-extractor data/glyphs --out data/glyph-extractor.pt --channels 1 --max-samples 5000
fi

# Every GPU; without CUDA one process, which uses both cores of a small machine through torch's
# threads: 2 gloo ranks (what --num-processes auto starts there) measured 15-25% slower.
processes=$("$venv/bin/python" -c 'import torch; print("auto" if torch.cuda.is_available() else 1)')
run_dir="runs/demo-$(date +%Y%m%d-%H%M%S)"
echo "gandist demo: training configs/demo.yaml into $run_dir (--num-processes $processes)"
"$gandist" train configs/demo.yaml --num-processes "$processes" output_dir="$run_dir" "$@"

# The last evaluation: domain FID and how evenly the digits are drawn (the glyph classifier's
# reading of the evaluation samples: every class near 10% is a generator without mode collapse).
"$venv/bin/python" - "$run_dir/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
evals = [row for row in rows if "eval/fid" in row and "eval/class_coverage" in row]
if evals:
    last = evals[-1]
    print(
        f"final evaluation at step {last['step']}: domain FID {last['eval/fid']:.1f}, "
        f"class coverage {last['eval/class_coverage']:.1f} (each digit "
        f"{last['eval/class_share_min']:.1%} to {last['eval/class_share_max']:.1%} of samples)"
    )
PY

latest_grid=$(ls "$run_dir"/samples/*.png | tail -n 1)
cat <<MSG

gandist demo finished. Outputs in $run_dir/:
  samples/        sample grids from a fixed latent batch; newest: $latest_grid
  metrics.jsonl   losses, D(real), D(fake), images/s per log step; eval/fid, eval/kid, eval/is,
                  eval/class_coverage
  checkpoints/    resumable training state (add resume=latest to continue)
  wandb/          the offline wandb run; upload it with: $venv/bin/wandb sync $run_dir/wandb/offline-run-*
Draw new samples:   $venv/bin/gandist sample $run_dir --num 64 --out grid.png
Score the best one: $venv/bin/gandist eval $run_dir --best
MSG
