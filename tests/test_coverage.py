"""Class coverage: the share of classes within a factor of two of uniform, in every evaluation
scored by a domain classifier."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn

from gandist.data.config import DataConfig
from gandist.metrics.config import EvalConfig
from gandist.metrics.coverage import class_coverage, class_histogram, coverage_metrics
from gandist.metrics.domain import ImageClassifier, save_classifier
from gandist.metrics.evaluate import Evaluator
from gandist.metrics.extractors import DOMAIN
from gandist.training.config import load_config
from gandist.training.trainer import Trainer
from tests import wandb_log
from tests.conftest import tiny_overrides


def test_a_generator_of_one_class_covers_nothing() -> None:
    predicted = torch.full((500,), 7)
    assert class_histogram(predicted, 10).tolist() == [0.0] * 7 + [1.0] + [0.0] * 2
    assert class_coverage(predicted, 10) == 0.0


def test_coverage_counts_classes_between_half_and_twice_uniform() -> None:
    assert class_coverage(torch.arange(1000) % 10, 10) == 1.0
    # shares: class 0 at 20% (2x uniform: in), class 1 at 4% (below 5%: out), the rest 9.5%
    counts = [200, 40] + [95] * 8
    predicted = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    assert class_histogram(predicted, 10).sum().item() == 1.0
    assert class_coverage(predicted, 10) == 0.9


class OneImage(nn.Module):
    """A 'generator' that draws the same image whatever the latent: one class only."""

    latent_dim = 4

    def __init__(self, image: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("image", image)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.image.expand(len(latents), -1, -1, -1)


def _classifier(path: Path) -> Path:
    torch.manual_seed(3)
    return save_classifier(ImageClassifier(3, 32, 10, width=8, feature_dim=16), path)


def test_evaluation_of_a_generator_of_one_class_scores_low_coverage(
    tmp_path: Path, glyph_shards: Path
) -> None:
    cfg = EvalConfig(
        num_samples=40, num_real=40, batch_size=20, extractor=DOMAIN, kid_subset_size=20,
        kid_subsets=2, weights_path=str(_classifier(tmp_path / "x.pt")),
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    evaluator = Evaluator(cfg, DataConfig(shards=str(glyph_shards)))
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    values = evaluator.evaluate(OneImage(image))
    assert values["eval/class_coverage"] == 0.0
    assert (values["eval/class_share_min"], values["eval/class_share_max"]) == (0.0, 1.0)
    # Coverage counts the classifier's reading of the samples: uniform logits give 1.
    logits = torch.eye(10).repeat(4, 1)  # [40, 10], four of each class
    assert coverage_metrics(logits)["eval/class_coverage"] == 1.0


def test_a_run_evaluated_with_a_domain_classifier_logs_class_coverage(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(
        run_dir, glyph_shards,
        **{
            "eval.every": 2, "eval.num_samples": 32, "eval.num_real": 32, "eval.batch_size": 16,
            "eval.extractor": DOMAIN, "eval.weights_path": _classifier(tmp_path / "x.pt"),
            "eval.cache_dir": tmp_path / "cache", "eval.kid_subset_size": 16,
            "eval.kid_subsets": 2, "eval.max_share": 1.0,
        },
    )  # fmt: skip
    Trainer(load_config(None, overrides)).train()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in rows if "eval/fid" in row]
    assert [row["step"] for row in evals] == [2, 4]
    for row in evals:
        assert 0.0 <= row["eval/class_coverage"] <= 1.0
        assert 0.0 <= row["eval/class_share_min"] <= 0.1 <= row["eval/class_share_max"] <= 1.0
    deadline = time.monotonic() + 60  # wandb's service may still be flushing after finish()
    while True:
        history = wandb_log.history(wandb_log.run_file(run_dir))
        logged = [row for row in history if "eval/fid" in row]
        if len(logged) == len(evals) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [row["eval/class_coverage"] for row in logged] == [
        row["eval/class_coverage"] for row in evals
    ]
