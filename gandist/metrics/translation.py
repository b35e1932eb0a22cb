"""Scoring an image translator (CycleGAN) in both directions, sharded like every evaluation.

A -> B is scored by FID/KID of the translations of the first eval.num_samples images of domain
A (data.shards) against the reference statistics of domain B (data.shards_b), and B -> A the
other way round; both use the cached references and the sharding of `Evaluator`. Also: the mean
cycle L1 |G_BA(G_AB(a)) - a| per direction, and, with a domain classifier as the extractor
(eval.extractor=gandist-domain) on labelled shards, how often the translation keeps the class
of its input: the classifier's accuracy on translated images against the inputs' labels.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Iterator

import torch
from torch import nn

from gandist.data.config import DataConfig
from gandist.data.health import BadSample, SkipCounter
from gandist.data.shards import expand_shards
from gandist.data.stream import read_shard
from gandist.metrics.config import EvalConfig
from gandist.metrics.evaluate import Evaluator, exact_float32
from gandist.metrics.sharded import (
    Ranks,
    SampleFormat,
    extract,
    gather_in_order,
    score,
    to_extractor_input,
)

DIRECTIONS = {"ab": ("ba", ""), "ba": ("ab", "_ba")}
"""Direction -> (the way back, the suffix of its metric keys): A -> B keeps the plain keys
(eval/fid is what the best checkpoint is chosen by)."""


def source_samples(
    shards: str, fmt: SampleFormat, num: int, ranks: Ranks
) -> Iterator[tuple[int, torch.Tensor, int]]:
    """This rank's share (index % world) of the first `num` samples of the sorted shards:
    (index, uint8 image [3, R, R], label or -1). Bad samples are skipped."""
    handler = SkipCounter()
    raw = itertools.chain.from_iterable(
        read_shard(url, handler, fmt.limits) for url in expand_shards(shards)
    )
    for index, sample in enumerate(itertools.islice(raw, num)):
        if index % ranks.world != ranks.rank:
            continue
        try:
            image = fmt.decode(sample)
        except BadSample:
            continue
        label = sample.get("cls", b"")  # tar member bytes, e.g. b"3"
        label = label.decode() if isinstance(label, bytes) else str(label)
        number = int(label) if label.strip().isdigit() else -1
        yield index, image, number


class TranslationEvaluator:
    """Scores a translator pair (`pair(images, "ab" | "ba")`) on every rank; the same surface
    as `Evaluator` (prepare, estimate_s, evaluate, reference, cache_hit, reference_s, ranks)."""

    def __init__(self, cfg: EvalConfig, data: DataConfig, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.data = {"a": data, "b": dataclasses.replace(data, shards=data.shards_b, shards_b="")}
        # Each direction is scored against the reference of the domain it translates into.
        self.to_a = Evaluator(cfg, self.data["a"], device)
        self.to_b = Evaluator(cfg, self.data["b"], device, extractor=self.to_a.extractor)
        self.ranks, self.layers = self.to_a.ranks, self.to_a.layers
        self.extractor = self.to_a.extractor
        self.classify = cfg.extractor == "gandist-domain" and "isc" in self.layers

    def prepare(self):
        self.to_a.prepare()
        return self.to_b.prepare()

    @property
    def reference(self):
        return self.to_b.reference

    @property
    def cache_hit(self) -> bool | None:
        return self.to_a.cache_hit and self.to_b.cache_hit

    @property
    def reference_s(self) -> float:
        return self.to_a.reference_s + self.to_b.reference_s

    @torch.no_grad()
    def estimate_s(self, pair: nn.Module) -> float:
        """Seconds one evaluation should take: one batch translated there and back and
        extracted, timed and scaled to this rank's share of both directions."""
        batch = min(self.cfg.batch_size, self.cfg.num_samples)
        fmt = SampleFormat.of(self.data["a"])
        samples = list(
            itertools.islice(
                source_samples(self.data["a"].shards, fmt, batch, Ranks(0, 1, self.ranks.device)),
                batch,
            )
        )
        images = torch.stack([s[1] for s in samples])[:, : fmt.channels].to(self.ranks.device)
        was_training = pair.training
        pair.eval()
        start = time.perf_counter()
        with exact_float32():
            translated = pair(images.float() / 127.5 - 1.0, "ab")
            pair(translated, "ba")
            self.extractor(to_extractor_input(translated))
        pair.train(was_training)
        per_batch = time.perf_counter() - start
        return 2 * per_batch * math.ceil(self.cfg.num_samples / self.ranks.world / batch)

    @torch.no_grad()
    def evaluate(self, pair: nn.Module, num: int | None = None) -> dict[str, float]:
        """Both directions' FID/KID (and IS), cycle L1 and, with a domain classifier, the share
        of translations that keep their input's class; eval/fid is A -> B's."""
        num = num or self.cfg.num_samples
        self.prepare()
        start = time.perf_counter()
        was_training = pair.training
        pair.eval()
        results: dict[str, float] = {}
        try:
            with exact_float32():
                for direction in DIRECTIONS:
                    results |= self._direction(pair, direction, num)
        finally:
            pair.train(was_training)
        results["perf/eval_s"] = time.perf_counter() - start
        return results

    def _direction(self, pair: nn.Module, direction: str, num: int) -> dict[str, float]:
        back, suffix = DIRECTIONS[direction]
        source = self.data["a" if direction == "ab" else "b"]
        target = self.to_b if direction == "ab" else self.to_a
        fmt = SampleFormat.of(source)
        device = self.ranks.device
        indices: list[int] = []
        extras: dict[str, list[torch.Tensor]] = {"cycle_l1": [], "label": []}  # each [n, 1]

        def batches() -> Iterator[torch.Tensor]:
            samples = source_samples(source.shards, fmt, num, self.ranks)
            while chunk := list(itertools.islice(samples, self.cfg.batch_size)):
                index, images, labels = zip(*chunk, strict=True)
                real = torch.stack(images)[:, : fmt.channels].to(device).float() / 127.5 - 1.0
                translated = pair(real, direction).float()
                cycled = pair(translated, back).float()
                indices.extend(index)
                extras["cycle_l1"].append((cycled - real).abs().flatten(1).mean(1, keepdim=True))
                extras["label"].append(torch.tensor(labels, dtype=torch.float32).view(-1, 1))
                yield to_extractor_input(translated)

        features = extract(self.extractor, batches(), device)
        for key, parts in extras.items():
            features[key] = torch.cat(parts) if parts else torch.empty(0, 1)
        gathered = gather_in_order(self.ranks, torch.tensor(indices, dtype=torch.int64), features)
        values = score(gathered, target.prepare(), self.layers, self.ranks, target.options)
        out = {f"{key}{suffix}": value for key, value in values.items()}
        out[f"eval/num_samples{suffix}"] = int(gathered["cycle_l1"].shape[0])
        out[f"eval/cycle_l1{suffix}"] = float(gathered["cycle_l1"].mean())
        labels = gathered["label"].flatten()
        if self.classify and bool((labels >= 0).any()):
            predicted = gathered[self.layers["isc"]].argmax(1)
            known = labels >= 0
            kept = (predicted[known] == labels[known].long()).float().mean()
            out[f"eval/class_kept{suffix}"] = float(kept)
        return out


def build_evaluator(
    cfg: EvalConfig, data: DataConfig, device: torch.device | str = "cpu"
) -> Evaluator | TranslationEvaluator:
    """A translator's evaluator when the data has a domain B (data.shards_b), else Evaluator."""
    if data.shards_b:
        return TranslationEvaluator(cfg, data, device)
    return Evaluator(cfg, data, device)
