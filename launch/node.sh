#!/usr/bin/env bash
# One node's share of a gandist run: `accelerate launch` of this node's ranks, which join the
# ranks of every other node in one process group (machine rank 0 hosts the rendezvous).
# slurm/train.sbatch runs it once per node (srun, one task per node); tests/test_multinode.py
# runs it twice on one machine as machine ranks 0 and 1.
#
#   GANDIST_NODES=2 GANDIST_PROCS_PER_NODE=2 GANDIST_MACHINE_RANK=1 GANDIST_MAIN_ADDR=node0 \
#     GANDIST_MAIN_PORT=29517 bash launch/node.sh CONFIG [key=value ...]
#
# GANDIST_NODES (default 1) x GANDIST_PROCS_PER_NODE (required) ranks in all; machine rank:
# GANDIST_MACHINE_RANK, else SLURM_NODEID (each srun task has its own). GANDIST_MAIN_ADDR
# (default 127.0.0.1) and GANDIST_MAIN_PORT (default 29500): where machine rank 0 listens.
# GPUs per node: SLURM_GPUS_ON_NODE (0: gloo ranks on the CPU). Python: $GANDIST_PYTHON, else
# python3. The launcher replaces this shell (exec), so a signal to the task reaches it directly.
# Stopping: the stop file ($GANDIST_STOP_FILE, seen by any one node) makes every rank save and
# every node exit 0. A TERM to every process (scancel, preemption) also makes the ranks save at
# one agreed step and exit 0, but torchrun's agent then exits 1 (its SignalException).
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: GANDIST_PROCS_PER_NODE=N [GANDIST_NODES=M ...] bash launch/node.sh CONFIG [key=value ...]" >&2
  exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
nodes=${GANDIST_NODES:-1}
per_node=${GANDIST_PROCS_PER_NODE:?set GANDIST_PROCS_PER_NODE to the ranks of this node}
machine_rank=${GANDIST_MACHINE_RANK:-${SLURM_NODEID:-0}}
gpus=${SLURM_GPUS_ON_NODE:-0}
total=$((nodes * per_node))
if [ "$total" -eq 1 ]; then
  accelerate_config=$here/accelerate/one_gpu.yaml
elif [ "$gpus" -gt 0 ]; then
  accelerate_config=$here/accelerate/one_node_multi_gpu.yaml
else
  accelerate_config=$here/accelerate/two_cpu_ranks.yaml
fi

launch=(
  "${GANDIST_PYTHON:-python3}" -m accelerate.commands.launch --config_file "$accelerate_config"
  --num_machines "$nodes" --machine_rank "$machine_rank" --num_processes "$total"
  --main_process_ip "${GANDIST_MAIN_ADDR:-127.0.0.1}" --main_process_port "${GANDIST_MAIN_PORT:-29500}"
  --mixed_precision no --dynamo_backend no # train.mixed_precision and train.compile decide
  -m gandist.train "$@"
)
echo "gandist: node $machine_rank of $nodes: $(printf '%q ' "${launch[@]}")"
exec "${launch[@]}"
