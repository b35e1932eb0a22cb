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


def coverage_metrics(logits: torch.Tensor) -> dict[str, float]:
    """What evaluation logs of generated samples' classes, from a domain classifier's logits
    [N, K]: `eval/class_coverage` and the smallest and largest class share (a uniform
    generator of K classes has both near 1 / K; a generator of one class has 0 and 1)."""
    num_classes = logits.shape[1]
    predicted = logits.argmax(dim=1)
    share = class_histogram(predicted, num_classes)
    return {
        "eval/class_coverage": class_coverage(predicted, num_classes),
        "eval/class_share_min": float(share.min()),
        "eval/class_share_max": float(share.max()),
    }
