"""Run by torchrun in tests: train with the real Trainer, then dump this rank's view to a file.

Usage: torchrun --standalone --nproc_per_node 2 train_and_dump_ranks.py DUMP_DIR [CONFIG.yaml]
[key=value ...]
"""

import sys

import torch

from gandist.training.config import load_config
from gandist.training.trainer import Trainer


def main() -> None:
    dump_dir, overrides = sys.argv[1], sys.argv[2:]
    config = overrides.pop(0) if overrides and overrides[0].endswith(".yaml") else None
    trainer = Trainer(load_config(config, overrides))
    state = trainer.train()
    accelerator = trainer.accelerator
    torch.save(
        {
            "world_size": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type),
            "step": state.step,
            "generator": trainer.algorithm.local("generator").state_dict(),
            "discriminator": trainer.algorithm.local("discriminator").state_dict(),
        },
        f"{dump_dir}/rank{accelerator.process_index}.pt",
    )


if __name__ == "__main__":
    main()
