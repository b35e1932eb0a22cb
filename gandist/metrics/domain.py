"""Domain classifiers for data InceptionV3 does not fit: networks, training on labelled shards, files."""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import webdataset as wds
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from gandist.data.shards import expand_shards
from gandist.data.stream import IMAGE_KEYS, ImageTransform, SkipCounter

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


class ImageClassifier(nn.Module):
    """A small CNN: images [B, C, R, R] in [-1, 1] -> (features [B, feature_dim], logits [B, K]).

    Strided convolutions halve the side down to 4 px; the penultimate layer is the feature
    space FID and KID are computed in, the logits give the Inception Score.
    """

    modality = "image"

    def __init__(
        self,
        channels: int,
        resolution: int,
        num_classes: int,
        width: int = 32,
        feature_dim: int = 128,
    ) -> None:
        super().__init__()
        self.hparams = {
            "channels": channels,
            "resolution": resolution,
            "num_classes": num_classes,
            "width": width,
            "feature_dim": feature_dim,
        }
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
        side, ch = resolution, width
        while side > 4:
            out = min(ch * 2, width * 8)
            layers += [
                nn.Conv2d(ch, out, 4, stride=2, padding=1),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2),
            ]
            side, ch = side // 2, out
        # Flattened, not pooled: where strokes sit in the 4x4 map is what tells digits apart.
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(ch * side * side, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.embed(self.body(images))
        return features, self.head(features)

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """torch-fidelity's input (uint8 [B, 1 or 3, H, W]) -> this network's float input."""
        assert batch.dtype == torch.uint8 and batch.dim() == 4, "expects uint8 [B, C, H, W]"
        x = batch.float().div(127.5).sub(1.0)
        channels, resolution = self.hparams["channels"], self.hparams["resolution"]
        if x.shape[1] == 3 and channels == 1:
            # ITU-R 601 luma, as PIL's convert("L") does for the training images.
            x = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        elif x.shape[1] == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-1] != resolution or x.shape[-2] != resolution:
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True)
        return x


# A classifier for another modality (e.g. audio: waveforms [B, 1, T] through a log-mel front end)
# plugs in here with the same interface: hparams, prepare(batch) and forward -> (features, logits).
CLASSIFIERS: dict[str, type[nn.Module]] = {"image": ImageClassifier}


def save_classifier(model: nn.Module, path: str | os.PathLike, **info: Any) -> Path:
    """Write the classifier with what is needed to rebuild it (atomically: tmp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT_VERSION,
        "modality": model.modality,
        "hparams": dict(model.hparams),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "info": info,
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_classifier(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """A classifier written by `save_classifier`, in eval mode, and its info."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"domain extractor file {path} does not exist; train one with "
            "`gandist metrics train-extractor SHARDS --out extractor.pt`"
        )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a gandist domain extractor (format {FORMAT_VERSION})")
    modality = payload["modality"]
    if modality not in CLASSIFIERS:
        raise ValueError(f"{path}: unknown modality {modality!r}; known: {sorted(CLASSIFIERS)}")
    model = CLASSIFIERS[modality](**payload["hparams"])
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload.get("info", {})


class FeatureExtractorDomain(FeatureExtractorBase):
    """A classifier trained by `gandist metrics train-extractor`, as a torch-fidelity extractor.

    Features: `features` (the penultimate layer, for FID and KID) and `logits` (for IS). Input:
    torch-fidelity's uint8 [B, C, H, W], converted to what the classifier was trained on.
    Registered as `gandist-domain` by `gandist.metrics.extractors.register_domain_extractor`.
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(f"{name} needs feature_extractor_weights_path (eval.weights_path)")
        self.classifier, self.info = load_classifier(feature_extractor_weights_path)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list():
        return ("features", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x):
        features, logits = self.classifier(self.classifier.prepare(x))
        named = {"features": features.float(), "logits": logits.float()}
        return tuple(named[name] for name in self.features_list)


def labelled_images(
    shards: str, resolution: int, channels: int, max_samples: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Every (image, label) of the shards in order: uint8 [N, C, R, R], int64 [N], bad samples skipped."""
    transform = ImageTransform(resolution, channels)
    handler = SkipCounter()
    raw = wds.tarfile_to_samples(handler=handler)(iter({"url": u} for u in expand_shards(shards)))
    decoded = wds.decode("pil", handler=handler)(itertools.islice(raw, max_samples))
    images, labels = [], []
    for sample in decoded:
        image = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
        if image is None or "cls" not in sample:
            handler(KeyError(f"sample {sample.get('__key__')} lacks an image or a cls label"))
            continue
        images.append(transform(image).add(1.0).mul(127.5).round().to(torch.uint8))
        labels.append(int(sample["cls"]))
    if not images:
        raise ValueError(f"{shards}: no labelled images (an image and a `cls` entry per sample)")
    return torch.stack(images), torch.tensor(labels), handler.count


def _batches(num: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    for epoch in itertools.count():
        del epoch
        yield from torch.randperm(num, generator=generator).split(batch_size)


@torch.no_grad()
def accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256
) -> float:
    model.eval()
    correct = 0
    for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True):
        correct += int((model(model.prepare(x))[1].argmax(1) == y).sum())
    return correct / max(1, len(labels))


def train_classifier(
    shards: str,
    out: str | os.PathLike,
    *,
    resolution: int = 32,
    channels: int = 3,
    steps: int = 200,
    batch_size: int = 64,
    width: int = 8,
    lr: float = 3e-3,
    val_fraction: float = 0.1,
    max_samples: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train an image classifier on labelled shards and save it; returns what was reported.

    Every `round(1 / val_fraction)`-th sample is held out to report validation accuracy, which
    tells whether the feature space separates the classes (a useless extractor gives useless FIDs).
    """
    start = time.perf_counter()
    images, labels, skipped = labelled_images(shards, resolution, channels, max_samples)
    num_classes = int(labels.max()) + 1
    stride = max(2, round(1 / val_fraction)) if val_fraction > 0 else 0
    held = torch.zeros(len(labels), dtype=torch.bool)
    if stride:
        held[::stride] = True
    train_x, train_y, val_x, val_y = images[~held], labels[~held], images[held], labels[held]
    torch.manual_seed(seed)
    model = ImageClassifier(channels, resolution, num_classes, width=width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    model.train()
    running = math.nan
    for step, index in enumerate(_batches(len(train_y), batch_size, seed), start=1):
        x = model.prepare(train_x[index])
        # Random shifts of up to 2 px: features that do not hinge on exact glyph placement.
        x = torch.roll(x, shifts=tuple(torch.randint(-2, 3, (2,)).tolist()), dims=(2, 3))
        loss = F.cross_entropy(model(x)[1], train_y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running = loss.item() if math.isnan(running) else 0.95 * running + 0.05 * loss.item()
        if progress and (step % 100 == 0 or step == steps):
            print(f"train-extractor: step {step}/{steps} loss {running:.4f}", flush=True)
        if step == steps:
            break
    report = {
        "num_train": len(train_y),
        "num_val": len(val_y),
        "num_classes": num_classes,
        "skipped": skipped,
        "train_accuracy": accuracy(model, train_x[:5000], train_y[:5000]),
        "val_accuracy": accuracy(model, val_x, val_y) if len(val_y) else math.nan,
        "steps": steps,
        "shards": str(shards),
        "train_s": time.perf_counter() - start,
    }
    save_classifier(model, out, **report)
    return report
