#!/usr/bin/env bash
# On a machine with one CUDA GPU, unattended in under 8 minutes: the GPU tests (fp16 with two
# scalers, bf16, inductor compile + channels_last, fused Adam, a one-rank NCCL group), then
# `gandist bench gpu` for DCGAN-64 and StyleGAN2-64 at batch 256: the plain fp32 loop against the
# Trainer at fp32, bf16, bf16 + channels_last, bf16 + channels_last streaming the shards (its
# data wait share), and bf16 + channels_last + compile (last: it compiles). Prints one table and
# writes it as JSON (rewritten after every run; each stage has a time limit, so a slow compile
# costs only the rows after it).
#
#   bash launch/gpu_check.sh            # results in ${OUT:-gpu-check}/ (JSON + logs)
#   STEPS=30 bash launch/gpu_check.sh   # shorter runs
#
# Python: $GANDIST_PYTHON, else .venv/bin/python, else python3; it needs gandist's
# dependencies (wandb, webdataset, torch-fidelity, omegaconf, soundfile) importable.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${GANDIST_PYTHON:-}
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
out=${OUT:-gpu-check}
steps=${STEPS:-60}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} WANDB_MODE=offline WANDB_SILENT=true

"$python" - <<'EOF'
import torch
assert torch.cuda.is_available(), "launch/gpu_check.sh needs a CUDA device"
print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}", flush=True)
EOF

echo "== GPU tests" | tee "$out/tests.log"
set +e
timeout -k 5 120 "$python" -m pytest -q -rs -m gpu tests/test_gpu.py 2>&1 | tee -a "$out/tests.log"
tests_status=${PIPESTATUS[0]}
set -e

shards=$out/glyphs64
if [ ! -f "$shards/manifest.json" ]; then
  "$python" -m gandist.cli data synth glyphs --size 64 --num 4096 --out "$shards" --quiet
fi

echo "== gandist bench gpu ($steps steps per run; log in $out/bench.log)"
set +e
# KILL, not TERM: a TERM would only ask the running Trainer to checkpoint and stop early.
timeout -s KILL 300 "$python" -m gandist.cli bench gpu configs/dcgan64.yaml configs/stylegan2.yaml \
  --set "data.shards=$shards" data.resolution=64 train.batch_size=256 data.num_workers=6 \
  --variants fp32 bf16 bf16+cl bf16+cl+stream bf16+cl+compile \
  --steps "$steps" --out "$out/bench_gpu.json" >"$out/bench.log" 2>&1
bench_status=$?
set -e

echo "== one table (also $out/bench_gpu.json)"
if [ -f "$out/bench_gpu.json" ]; then
  "$python" - "$out/bench_gpu.json" <<'EOF'
import json, sys
from gandist.bench.gpu import format_table
print(format_table(json.load(open(sys.argv[1]))))
EOF
else
  tail -n 20 "$out/bench.log"
fi
echo "gpu_check: tests exit $tests_status, bench exit $bench_status (137: stopped at its time limit)"
[ "$tests_status" -eq 0 ] && [ "$bench_status" -eq 0 ]
