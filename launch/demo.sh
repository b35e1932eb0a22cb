#!/usr/bin/env bash
# One command from a fresh machine to a trained GAN: sets up .venv, writes the built-in glyph
# shards, trains a DCGAN on every local device (all GPUs, or 2 gloo ranks on a CPU machine),
# and prints where the outputs are. Re-running reuses the venv and the shards.
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

run_dir="runs/demo-$(date +%Y%m%d-%H%M%S)"
echo "gandist demo: training configs/demo.yaml into $run_dir"
"$gandist" train configs/demo.yaml --num-processes auto output_dir="$run_dir" "$@"

latest_grid=$(ls "$run_dir"/samples/*.png | tail -n 1)
cat <<MSG

gandist demo finished. Outputs in $run_dir/:
  samples/        sample grids from a fixed latent batch; newest: $latest_grid
  metrics.jsonl   losses, D(real), D(fake), images/s per log step; eval/fid, eval/kid, eval/is
  checkpoints/    resumable training state (add resume=latest to continue)
  wandb/          the offline wandb run; upload it with: $venv/bin/wandb sync $run_dir/wandb/offline-run-*
Draw new samples:   $venv/bin/gandist sample $run_dir --num 64 --out grid.png
Score the best one: $venv/bin/gandist eval $run_dir --best
MSG
