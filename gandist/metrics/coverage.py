"""Mode coverage for labelled data: the class histogram of generated samples, as a domain
classifier reads them, and the share of classes it covers."""

from __future__ import annotations

import torch


def class_histogram(predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Share of samples per class [num_classes] (sums to 1) from predicted labels [N]."""
    counts = torch.bincount(predicted.flatten().long(), minlength=num_classes)[:num_classes]
    return counts.double() / max(1, predicted.numel())


def class_coverage(predicted: torch.Tensor, num_classes: int) -> float:
    """The fraction of classes whose share is within a factor of two of uniform
    ([1 / (2K), 2 / K]): 1.0 when every class is drawn about equally, 0.0 for a generator
    of one class only (its class is far above twice uniform, every other one absent)."""
    share = class_histogram(predicted, num_classes)
    uniform = 1.0 / num_classes
    covered = (share >= uniform / 2) & (share <= uniform * 2)
    return float(covered.double().mean())
