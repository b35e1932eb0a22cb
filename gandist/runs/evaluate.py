"""`gandist eval RUN_OR_CHECKPOINT`: score a saved generator on one or many ranks and record it."""

from __future__ import annotations

import json
import os
from typing import Any

from gandist.registry import MODELS
from gandist.rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    generator_step,
    load_generator_weights,
    run_dir_of,
)
from gandist.training.config import Config, load_config

EVAL_RESULTS_FILE = "eval.jsonl"


def evaluate_checkpoint(
    run_or_checkpoint: str | os.PathLike,
    overrides: list[str],
    num: int | None = None,
    best: bool = False,
) -> tuple[dict[str, Any], Config]:
    """Score the newest checkpoint of a run (its best with `best`, or one checkpoint folder) on
    every launched rank.

    The config saved with the checkpoint is used, with `eval.*=...` overrides on top (e.g. the
    extractor and its weights). Results are printed and appended (main process) to the
    checkpoint's `eval.jsonl` and the run's `metrics.jsonl`, at the checkpoint's step.
    """
    from gandist.distributed import build_accelerator
    from gandist.metrics.extractors import preflight
    from gandist.metrics.translation import build_evaluator

    weights, folder = load_generator_weights(run_or_checkpoint, best=best)
    cfg = load_config(folder / CONFIG_FILE, overrides)
    preflight(cfg.eval.extractor, cfg.eval.weights_path, cfg.data)
    # Joins the process group a launcher (torchrun, accelerate launch, srun) set up, if any.
    accelerator = build_accelerator("fp32")
    build = MODELS.get(cfg.model.name)
    if getattr(build, "translator", False):  # CycleGAN exports both translators as one module
        from gandist.models.cyclegan import build_pair

        generator = build_pair(cfg.model, cfg.data.resolution, cfg.data.channels)
    else:
        generator, _ = build(cfg.model, cfg.data.resolution, cfg.data.channels)
    generator.load_state_dict(weights)
    generator.to(accelerator.device)
    evaluator = build_evaluator(cfg.eval, cfg.data, accelerator.device)
    evaluator.prepare()
    results = evaluator.evaluate(generator, num=num)
    step = generator_step(folder)
    record: dict[str, Any] = {
        "step": step,
        **results,
        "perf/eval_reference_s": evaluator.reference_s,
        "eval/reference_cache_hit": int(bool(evaluator.cache_hit)),
        "eval/num_real": evaluator.reference.num,
        "eval/world_size": accelerator.num_processes,
        "eval/extractor": cfg.eval.extractor,
        "checkpoint": str(folder),
    }
    if accelerator.is_main_process:
        line = json.dumps(record) + "\n"
        with (folder / EVAL_RESULTS_FILE).open("a") as f:
            f.write(line)
        run_dir = run_dir_of(folder)
        if (run_dir / METRICS_FILE).is_file():
            with (run_dir / METRICS_FILE).open("a") as f:
                f.write(line)
    accelerator.wait_for_everyone()
    return record, cfg
