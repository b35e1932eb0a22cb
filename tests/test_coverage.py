"""Class coverage: the share of classes within a factor of two of uniform."""

from __future__ import annotations

import torch

from gandist.metrics.coverage import class_coverage, class_histogram


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
