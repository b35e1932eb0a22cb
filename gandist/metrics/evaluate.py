"""The Evaluator (extractor + cached reference + sharded scoring) and the pacing of evaluations."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from gandist.data.config import DataConfig
from gandist.metrics.config import EvalConfig
from gandist.metrics.coverage import coverage_metrics
from gandist.metrics.extractors import (
    DOMAIN,
    check_extractor_kind,
    create_extractor,
    file_digest,
    metric_layers,
    resolve_weights,
)
from gandist.metrics.sharded import (
    CACHE_SUFFIX,
    Ranks,
    Reference,
    SampleFormat,
    ScoreOptions,
    default_cache_dir,
    generated_features,
    real_features,
    reference_key,
    reference_statistics,
    score,
)

log = logging.getLogger(__name__)


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """TF32 off (matmul and cuDNN) for the duration, so scores compare across runs and GPUs."""
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


class Evaluator:
    """Scores a generator with FID, KID and IS on every rank of the current process group.

    Images or audio, per `data.kind`: generated samples are [B, C, H, W] or [B, 1, L] in
    [-1, 1], and audio needs an audio extractor (`gandist metrics train-extractor` on audio).

    Construction loads the extractor (failing with a how-to-fetch message when its weights are
    missing); `prepare()` loads or computes the reference statistics; `evaluate(G)` generates,
    extracts and scores. Every rank must make the same calls (they run collectives).
    """

    def __init__(
        self,
        cfg: EvalConfig,
        data: DataConfig,
        device: torch.device | str = "cpu",
        extractor: nn.Module | None = None,
    ) -> None:
        self.cfg, self.data = cfg, data
        self.ranks = Ranks.current(device)
        check_extractor_kind(cfg.extractor, cfg.weights_path, data)  # before any download
        self.weights_path = resolve_weights(cfg.extractor, cfg.weights_path)
        self.format = SampleFormat.of(data)
        self.layers = metric_layers(cfg.extractor)
        # An evaluator of another set scored by the same extractor may lend it (translation).
        self.extractor = extractor or create_extractor(
            cfg.extractor, list(self.layers.values()), self.weights_path, self.ranks.device
        )
        self.options = ScoreOptions(
            kid_subsets=cfg.kid_subsets,
            kid_subset_size=cfg.kid_subset_size,
            isc_splits=cfg.isc_splits,
            prc=cfg.precision_recall,
            prc_neighborhood=cfg.prc_neighborhood,
        )
        # A domain classifier's logits name the class of each sample: class coverage.
        self.classifies = cfg.extractor == DOMAIN and "isc" in self.layers
        self.reference: Reference | None = None
        self.cache_hit: bool | None = None
        self.reference_s = 0.0

    def cache_path(self) -> tuple[Path, dict]:
        digest, description = reference_key(
            self.data.shards,
            extractor=self.cfg.extractor,
            weights_digest=file_digest(self.weights_path) if self.weights_path else None,
            layers=self.layers,
            fmt=self.format,
            num=self.cfg.num_real,
        )
        root = Path(self.cfg.cache_dir) if self.cfg.cache_dir else default_cache_dir()
        return root / f"reference-{digest}{CACHE_SUFFIX}", description

    def prepare(self) -> Reference:
        """Reference statistics of the real shards: from the cache, or computed sharded and cached."""
        if self.reference is not None:
            return self.reference
        start = time.perf_counter()
        path, description = self.cache_path()

        def compute() -> dict[str, torch.Tensor]:
            with exact_float32():
                return real_features(
                    self.data.shards,
                    self.extractor,
                    self.ranks,
                    fmt=self.format,
                    num=self.cfg.num_real,
                    batch_size=self.cfg.batch_size,
                )

        self.reference, self.cache_hit = reference_statistics(
            compute, self.layers, self.ranks, path, description
        )
        self.reference_s = time.perf_counter() - start
        if self.ranks.rank == 0:
            verb = "loaded" if self.cache_hit else "computed and cached"
            log.info(
                "reference statistics of %d real samples %s (%s) in %.1f s",
                self.reference.num, verb, path, self.reference_s,
            )  # fmt: skip
        return self.reference

    @torch.no_grad()
    def estimate_s(self, generator: nn.Module) -> float:
        """Seconds one evaluation should take (for pacing the first one).

        Generation and extraction are timed on one batch and scaled to this rank's share;
        FID statistics and KID are timed for real on the reference features, since with the
        default 100 KID subsets of 1000 they can cost more than the extraction.
        """
        from torch_fidelity.metric_fid import fid_features_to_statistics
        from torch_fidelity.metric_kid import kid_features_to_metric

        from gandist.metrics.sharded import evaluation_latents, to_extractor_input
        from gandist.models import generate

        batch = min(self.cfg.batch_size, self.cfg.num_samples)
        num_classes = int(getattr(generator, "num_classes", 0) or 0)
        latents, labels = evaluation_latents(batch, int(generator.latent_dim), num_classes, 0)
        if labels is not None:
            labels = labels.to(self.ranks.device)
        was_training = generator.training
        generator.eval()
        start = time.perf_counter()
        with exact_float32():
            samples = generate(generator, latents.to(self.ranks.device), labels)
            self.extractor(to_extractor_input(samples))
        generator.train(was_training)
        extract_s = (time.perf_counter() - start) * math.ceil(
            self.cfg.num_samples / self.ranks.world / batch
        )
        reference = self.prepare()
        features = reference.kid_features[: self.cfg.num_samples]
        start = time.perf_counter()
        fid_features_to_statistics(features)
        kid_features_to_metric(
            features,
            features,
            kid_subsets=self.cfg.kid_subsets,
            kid_subset_size=min(self.cfg.kid_subset_size, len(features)),
            verbose=False,
        )
        return extract_s + time.perf_counter() - start

    @torch.no_grad()
    def evaluate(self, generator: nn.Module, num: int | None = None) -> dict[str, float]:
        """FID / KID / IS of `generator` on `num` samples (eval.num_samples by default), plus timing.

        The generator runs in eval mode and full float32 (no autocast, TF32 off) with the fixed
        eval batch size; its previous mode is restored.
        """
        reference = self.prepare()
        num = num or self.cfg.num_samples
        start = time.perf_counter()
        was_training = generator.training
        generator.eval()
        try:
            with exact_float32():
                fake = generated_features(
                    generator,
                    self.extractor,
                    self.ranks,
                    num=num,
                    latent_dim=int(generator.latent_dim),
                    batch_size=self.cfg.batch_size,
                    seed=self.cfg.seed,
                    num_classes=int(getattr(generator, "num_classes", 0) or 0),
                    truncation=self.cfg.truncation,
                )
                results = score(fake, reference, self.layers, self.ranks, self.options)
                if self.classifies:  # every rank holds every sample's logits: no collective
                    results |= coverage_metrics(fake[self.layers["isc"]])
        finally:
            generator.train(was_training)
        results["eval/num_samples"] = num
        results["perf/eval_s"] = time.perf_counter() - start
        return results


class EvalPacer:
    """Decides when a due evaluation runs so that evaluation stays within `max_share` of wall time.

    Progress is counted in `unit`s: training steps (eval.every) or global images seen
    (eval.every_images). An evaluation is due once progress reaches the next multiple of
    `every`: with images, a step whose batch carries the count across a multiple triggers it,
    even when the batch size does not divide `every`.

    Rank 0 measures and decides; the decision is shared, so every rank evaluates at the same
    step. A due evaluation that does not fit yet is postponed by as much progress as training
    needs to earn it, at the training speed measured so far.
    """

    def __init__(
        self,
        every: int,
        max_share: float,
        estimate_s: float = 0.0,
        start_at: int = 0,
        unit: str = "steps",
    ) -> None:
        assert every >= 1, every
        self.every, self.max_share, self.unit = every, max_share, unit
        self.start = time.perf_counter()
        self.start_at = start_at
        self.eval_s = 0.0
        self.estimate_s = (
            estimate_s  # cost of the next evaluation: the last one's, once there is one
        )
        self.next_at = self._next_multiple(start_at)

    def _next_multiple(self, progress: int) -> int:
        return (progress // self.every + 1) * self.every

    def share(self) -> float:
        return self.eval_s / max(1e-9, time.perf_counter() - self.start)

    def due(self, progress: int) -> bool:
        return progress >= self.next_at

    def decide(self, progress: int, ranks: Ranks) -> bool:
        """When due: run now, or move `next_at` on. The same answer on every rank."""
        delay = 0
        if ranks.rank == 0:
            wall = time.perf_counter() - self.start
            needed_wall = (self.eval_s + self.estimate_s) / self.max_share - self.estimate_s
            done = progress - self.start_at
            if needed_wall > wall and done > 0:
                train_s_per_unit = max(1e-9, (wall - self.eval_s) / done)
                delay = max(1, math.ceil((needed_wall - wall) / train_s_per_unit))
        delay = ranks.all_gather_object(delay)[0]
        if delay:
            self.next_at = progress + delay
            return False
        self.next_at = self._next_multiple(progress)
        return True

    def record(self, eval_s: float) -> None:
        self.eval_s += eval_s
        self.estimate_s = eval_s
