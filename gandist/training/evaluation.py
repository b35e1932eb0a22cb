"""Evaluation during training: FID/KID/IS when due, within a share of wall time, and the best."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from torch import nn

from gandist.data.config import DataConfig
from gandist.metrics.config import EvalConfig
from gandist.rundir import BEST, best_checkpoint

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    values: dict[str, float]
    is_best: bool


class TrainingEvaluation:
    """Paces the sharded evaluation (every rank takes part) and tracks the best FID.

    Built only when `eval.every` or `eval.every_images` is set; `prepare` loads the extractor
    and the reference statistics before the first step, so a broken setup fails at once.
    """

    def __init__(self, cfg: EvalConfig, data: DataConfig, device, run_dir, is_main: bool) -> None:
        from gandist.metrics.translation import build_evaluator

        self.cfg, self.is_main = cfg, is_main
        self.by_images = cfg.every_images > 0
        self.evaluator = build_evaluator(cfg, data, device)
        self.pacer = None
        best = best_checkpoint(run_dir)
        best_info = json.loads((best / BEST).read_text()) if best else {}
        self.best_fid = float(best_info.get("fid", float("inf")))

    def progress(self, step: int, images_seen: int) -> int:
        """How far training is in the unit evaluations are paced in: steps, or global images."""
        return images_seen if self.by_images else step

    def prepare(self, generator: nn.Module, progress: int) -> dict[str, float]:
        """Load the extractor and reference statistics; returns what to log about them."""
        from gandist.metrics.evaluate import EvalPacer

        self.evaluator.prepare()
        self.pacer = EvalPacer(
            self.cfg.every_images if self.by_images else self.cfg.every,
            self.cfg.max_share,
            estimate_s=self.evaluator.estimate_s(generator),
            start_at=progress,
            unit="images" if self.by_images else "steps",
        )
        return {
            "perf/eval_reference_s": self.evaluator.reference_s,
            "eval/reference_cache_hit": int(bool(self.evaluator.cache_hit)),
            "eval/num_real": self.evaluator.reference.num,
        }

    def maybe_run(self, generator: nn.Module, progress: int, last: bool) -> EvalResult | None:
        """Evaluate when due (or at the last step) and within eval.max_share of wall time."""
        pacer = self.pacer
        assert pacer is not None, "prepare() first"
        if not (pacer.due(progress) or last):
            return None
        # The last step always evaluates: a short run would otherwise end with no final score.
        # `last` is the same on every rank, so skipping the collective `decide` is safe.
        if not last and not pacer.decide(progress, self.evaluator.ranks):
            if self.is_main:
                log.info(
                    "evaluation postponed to %d %s (eval.max_share)", pacer.next_at, pacer.unit
                )
            return None
        values = self.evaluator.evaluate(generator)
        pacer.record(values["perf/eval_s"])
        values["perf/eval_share"] = pacer.share()
        is_best = values["eval/fid"] < self.best_fid
        if is_best:
            self.best_fid = values["eval/fid"]
        values["eval/best_fid"] = self.best_fid
        if self.is_main:
            log.info("%s", " ".join(f"{k.split('/')[1]}={v:.4g}" for k, v in values.items()))
        return EvalResult(values, is_best and self.cfg.keep_best)
