"""Entry point of one training process: `python -m gandist.train CONFIG [key=value ...]`.

Run it under any launcher: `accelerate launch --multi_gpu --num_processes N -m gandist.train`,
`torchrun --nproc_per_node N -m gandist.train`, `srun`, or alone for one process.
"""

from __future__ import annotations

import logging
import os
import sys

import torch

from gandist.checkpoint import check_resume_compatible
from gandist.config import to_yaml
from gandist.data.shards import expand_shards
from gandist.distributed import launched_world_size
from gandist.errors import ConfigError
from gandist.preemption import ignore_stop_signals
from gandist.rundir import latest_checkpoint, resolve_resume
from gandist.training.config import Config, load_config
from gandist.training.preflight import preflight_data
from gandist.training.run_record import keep_credentials_private


def preflight(cfg: Config, world_size: int | None = None) -> None:
    """Checks that need no process group, so a mistake costs seconds, not a queue slot."""
    if cfg.train.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError(
            "train.mixed_precision=fp16 needs a CUDA GPU (fp16 autocast with loss scaling); "
            "on CPU use bf16 or fp32"
        )
    world = launched_world_size() if world_size is None else world_size
    if cfg.train.batch_size % world:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} is the global batch and must divide evenly "
            f"by the {world} processes"
        )
    try:
        expand_shards(cfg.data.shards)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    preflight_data(cfg)  # what the shards hold; fills in model.num_classes left at 0
    if os.environ.get("RANK", "0") == "0":  # later ranks might see their own job's lock
        check_run_dir_free(cfg.output_dir)
    if cfg.eval.enabled:
        from gandist.metrics.extractors import preflight as eval_preflight

        eval_preflight(cfg.eval.extractor, cfg.eval.weights_path, cfg.data)
    if cfg.resume is None and latest_checkpoint(cfg.output_dir) is not None:
        raise ConfigError(
            f"{cfg.output_dir} already holds checkpoints: pass resume=latest to continue that run, "
            "or output_dir=... for a new one"
        )
    try:
        resume_from = resolve_resume(cfg.resume, cfg.output_dir)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if resume_from is not None:
        check_resume_compatible(resume_from, to_yaml(cfg))


def check_run_dir_free(output_dir: str) -> None:
    """ConfigError when another job trains in `output_dir` (its lock is held), before any
    process starts; the Trainer takes the lock itself when it starts."""
    from gandist.training.runlock import RunLock, RunLockedError

    if not os.path.isdir(output_dir):
        return
    try:
        RunLock(output_dir).acquire().release()
    except RunLockedError as err:
        raise ConfigError(str(err)) from None


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    for noisy in ("accelerate", "wandb", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    try:
        cfg = load_config(argv[0], argv[1:])
        keep_credentials_private(cfg)  # before any file of the run is written
        preflight(cfg)
    except ConfigError as err:
        print(f"gandist: error: {err}", file=sys.stderr)
        return 2
    configure_logging()
    from gandist.training.trainer import Trainer  # after validation: keeps config errors fast

    try:
        progress = Trainer(cfg).train()
    except run_errors() as err:
        print(f"gandist: error: {err}", file=sys.stderr)
        return 1
    if progress.step < cfg.train.steps:  # stopped on request and saved: only the exit is left
        ignore_stop_signals()
    return 0


def run_errors() -> tuple[type[Exception], ...]:
    """Errors that end a run with one line that says it all (exit 1), not a traceback: a lost
    rank, unusable GPUs, a run that stopped making finite updates, stuck data workers, a run
    directory held by another job."""
    from gandist.data.loader import DataTimeoutError
    from gandist.distributed import CudaUnavailableError, RankLostError
    from gandist.training.runlock import RunLockedError
    from gandist.training.updater import NonFiniteTrainingError

    return (
        RankLostError,
        CudaUnavailableError,
        NonFiniteTrainingError,
        DataTimeoutError,
        RunLockedError,
    )


if __name__ == "__main__":
    sys.exit(main())
