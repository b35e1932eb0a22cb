"""Domain classifiers for data InceptionV3 does not fit: networks, training on labelled shards, files."""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import webdataset as wds
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from gandist.data.decode import AUDIO_KEYS, IMAGE_KEYS, ToExample, media_transform
from gandist.data.health import BadSample, SkipCounter
from gandist.data.shards import expand_shards, read_manifest, redact_message, redact_shards
from gandist.data.stream import read_shard

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


class ImageClassifier(nn.Module):
    """A small CNN: images [B, C, R, R] in [-1, 1] -> (features [B, feature_dim], logits [B, K]).

    Strided convolutions halve the side down to 4 px; the penultimate layer is the feature
    space FID and KID are computed in, the logits give the Inception Score.
    """

    kind = "image"

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
        if batch.dtype != torch.uint8 or batch.dim() != 4 or batch.shape[1] not in (1, 3):
            raise ValueError(
                "this gandist-domain extractor was trained on images and scores uint8 images "
                f"[B, 1 or 3, H, W]; got {describe(batch)} (audio needs an extractor trained on "
                "audio shards)"
            )
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


def describe(batch: torch.Tensor) -> str:
    """`uint8 [8, 3, 32, 32]`: what an extractor was given, for error messages."""
    kind = "audio" if batch.dim() == 3 else "images" if batch.dim() == 4 else "a tensor"
    return f"{kind} {str(batch.dtype).removeprefix('torch.')} {list(batch.shape)}"


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """Triangular mel filters (HTK mel scale), [n_mels, n_fft // 2 + 1]; each filter peaks at 1."""

    def to_mel(hz: torch.Tensor) -> torch.Tensor:
        return 2595.0 * torch.log10(1.0 + hz / 700.0)

    def to_hz(mel: torch.Tensor) -> torch.Tensor:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)

    bins_hz = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    top = to_mel(torch.tensor(sample_rate / 2, dtype=torch.float64))
    edges_hz = to_hz(torch.linspace(0.0, float(top), n_mels + 2, dtype=torch.float64))
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz - lower) / (centre - lower)
    falling = (upper - bins_hz) / (upper - centre)
    return torch.minimum(rising, falling).clamp_min(0.0).float()


class AudioClassifier(nn.Module):
    """A small 1-D CNN: waveforms [B, 1, L] in [-1, 1] -> (features [B, feature_dim], logits [B, K]).

    A fixed log-mel front end (torch.stft and a mel filterbank, no learned weights) turns the
    clip into [B, n_mels, frames]; strided Conv1d layers over time, with the mel bands as
    channels, halve the frame count down to 8; mean and max pooling over time make the
    features independent of the clip length and of where in the clip a sound starts, as in the
    spoken-digit classifier the WaveGAN authors scored their generators with.
    """

    kind = "audio"

    def __init__(
        self,
        sample_rate: int,
        length: int,
        num_classes: int,
        width: int = 8,
        feature_dim: int = 128,
        n_mels: int = 40,
        n_fft: int = 512,
        hop: int = 128,
    ) -> None:
        super().__init__()
        self.hparams = {
            "sample_rate": sample_rate,
            "length": length,
            "num_classes": num_classes,
            "width": width,
            "feature_dim": feature_dim,
            "n_mels": n_mels,
            "n_fft": n_fft,
            "hop": hop,
        }
        # Derived from the hparams, so not saved: a file holds learned weights only.
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("mel", mel_filterbank(sample_rate, n_fft, n_mels), persistent=False)
        ch = 4 * width
        layers: list[nn.Module] = [
            nn.BatchNorm1d(n_mels),  # per-band standardisation of the log-mel input
            nn.Conv1d(n_mels, ch, 3, padding=1),
            nn.LeakyReLU(0.2),
        ]
        frames = length // hop + 1
        while frames > 8:
            out = min(ch * 2, width * 16)
            layers += [
                nn.Conv1d(ch, out, 4, stride=2, padding=1),
                nn.BatchNorm1d(out),
                nn.LeakyReLU(0.2),
            ]
            frames, ch = frames // 2, out
        self.body = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Linear(2 * ch, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """[B, 1, L] -> log mel power [B, n_mels, L // hop + 1]."""
        spec = torch.stft(
            waveforms[:, 0],
            n_fft=self.hparams["n_fft"],
            hop_length=self.hparams["hop"],
            window=self.window,
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # [B, n_fft // 2 + 1, frames]
        return torch.log(torch.matmul(self.mel, power) + 1e-6)

    def forward(self, waveforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.body(self.log_mel(waveforms))  # [B, ch, frames]
        pooled = torch.cat([hidden.mean(-1), hidden.amax(-1)], dim=1)
        features = self.embed(pooled)
        return features, self.head(features)

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """torch-fidelity's input for audio (float [B, 1, L] in [-1, 1]) -> this network's input."""
        if not batch.is_floating_point() or batch.dim() != 3 or batch.shape[1] != 1:
            raise ValueError(
                "this gandist-domain extractor was trained on audio and scores float waveforms "
                f"[B, 1, L]; got {describe(batch)} (images need an extractor trained on image "
                "shards)"
            )
        if batch.shape[-1] < self.hparams["n_fft"]:
            raise ValueError(
                f"clips of {batch.shape[-1]} samples are shorter than the extractor's "
                f"{self.hparams['n_fft']}-sample STFT window"
            )
        return batch.float()


# Every classifier has the same interface: `kind`, `hparams`, prepare(batch) and
# forward -> (features, logits). The kind is saved in the file and picks the class on load.
CLASSIFIERS: dict[str, type[nn.Module]] = {"image": ImageClassifier, "audio": AudioClassifier}


def save_classifier(model: nn.Module, path: str | os.PathLike, **info: Any) -> Path:
    """Write the classifier with what is needed to rebuild it (atomically: tmp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT_VERSION,
        "kind": model.kind,
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
    kind = payload.get("kind", payload.get("modality"))  # files from before audio say `modality`
    if kind not in CLASSIFIERS:
        raise ValueError(f"{path}: unknown kind {kind!r}; known: {sorted(CLASSIFIERS)}")
    model = CLASSIFIERS[kind](**payload["hparams"])
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload.get("info", {})


def classifier_kind(path: str | os.PathLike) -> str:
    """`image` or `audio`: what the classifier in `path` was trained on (and scores)."""
    model, _ = load_classifier(path)
    return model.kind


class FeatureExtractorDomain(FeatureExtractorBase):
    """A classifier trained by `gandist metrics train-extractor`, as a torch-fidelity extractor.

    Features: `features` (the penultimate layer, for FID and KID) and `logits` (for IS). Input:
    for an image classifier torch-fidelity's uint8 [B, C, H, W], converted to what it was trained
    on; for an audio classifier float waveforms [B, 1, L] in [-1, 1]. Anything else is a
    ValueError naming what the classifier scores and what it was given.
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


def shards_kind(shards: str) -> str:
    """`image` or `audio`: the `kind` in the shards' manifest, else the first sample's media member."""
    urls = expand_shards(shards)
    kind = (read_manifest(urls[0]) or {}).get("kind")
    if kind in CLASSIFIERS:
        return kind
    for sample in read_shard(urls[0], SkipCounter()):
        if any(key in sample for key in AUDIO_KEYS):
            return "audio"
        if any(key in sample for key in IMAGE_KEYS):
            return "image"
        break
    raise ValueError(
        f"{redact_shards(shards)}: cannot tell whether the shards hold images or audio; pass --kind"
    )


_GIVE_UP_AFTER_BAD = 64  # bad samples before the first good one that end the reading


def labelled_samples(
    shards: str,
    kind: str,
    transform: Callable[[Any], np.ndarray],
    max_samples: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Every (sample, label) of the shards in order: ([N, ...], int64 [N], number of bad samples).

    Read and decoded by the training stream's own code (`read_shard`, `ToExample`), so member
    lookup, decoding and bad-sample handling are those of training, in sorted shard order
    (so the held-out split does not depend on a shuffle). Images come as uint8 [N, C, R, R],
    audio as float [N, 1, L] in [-1, 1].
    """
    handler = SkipCounter()
    values: list[np.ndarray] = []
    labels: list[int] = []

    def raw() -> Iterator[dict[str, Any]]:
        for url in expand_shards(shards):
            for position, sample in enumerate(read_shard(url, handler), start=1):
                if handler.count >= _GIVE_UP_AFTER_BAD and not values:
                    return  # wrong kind or no labels: say so now, not after every sample
                # ToExample carries the stream position along; here it is one ordered pass.
                yield sample | {"__role__": 0, "__epoch__": 0, "__position__": position}

    examples = wds.map(ToExample(transform, kind), handler=handler)(raw())
    for example in examples:
        if example["label"] < 0:
            handler(BadSample(example["url"], example["key"], "no `cls` label"))
            continue
        values.append(example[kind])
        labels.append(example["label"])
        if len(values) == max_samples:
            break
    if not values:
        example = ""
        if handler.pending:
            bad = handler.pending[0]
            example = f"; e.g. {redact_message(str(bad), getattr(bad, 'url', ''))}"
        raise ValueError(
            f"{redact_shards(shards)}: no labelled {kind} samples (a {'/'.join(ToExample(transform, kind).keys)} "
            f"member and a `cls` entry per sample); {handler.count} read and skipped{example}"
        )
    return torch.from_numpy(np.stack(values)), torch.tensor(labels), handler.count


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
    kind: str | None = None,
    resolution: int | None = None,
    channels: int | None = None,
    sample_rate: int | None = None,
    length: int | None = None,
    steps: int = 200,
    batch_size: int = 64,
    width: int = 8,
    lr: float = 3e-3,
    val_fraction: float = 0.1,
    max_samples: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train an image or audio classifier on labelled shards and save it; returns what was reported.

    `kind` defaults to the shards' manifest (`gandist data make/synth` write it), and so do the
    image size and channels or the audio sample rate and clip length; arguments override it.
    Every `round(1 / val_fraction)`-th sample is held out to report validation accuracy, which
    tells whether the feature space separates the classes (a useless extractor gives useless FIDs).
    """
    start = time.perf_counter()
    kind = kind or shards_kind(shards)
    if kind not in CLASSIFIERS:
        raise ValueError(f"unknown kind {kind!r}; choose from {sorted(CLASSIFIERS)}")
    manifest = read_manifest(expand_shards(shards)[0]) or {}
    resolution = resolution or int(manifest.get("resolution", 32))
    channels = channels or int(manifest.get("channels", 3))
    sample_rate = sample_rate or int(manifest.get("sample_rate", 16000))
    length = length or int(manifest.get("length", 16384))
    transform = media_transform(
        kind, resolution=resolution, channels=channels, sample_rate=sample_rate, length=length
    )
    samples, labels, skipped = labelled_samples(shards, kind, transform, max_samples)
    num_classes = int(labels.max()) + 1
    stride = max(2, round(1 / val_fraction)) if val_fraction > 0 else 0
    held = torch.zeros(len(labels), dtype=torch.bool)
    if stride:
        held[::stride] = True
    train_x, train_y, val_x, val_y = samples[~held], labels[~held], samples[held], labels[held]
    torch.manual_seed(seed)
    if kind == "image":
        model: nn.Module = ImageClassifier(channels, resolution, num_classes, width=width)
    else:
        model = AudioClassifier(sample_rate, length, num_classes, width=width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    model.train()
    running = math.nan
    for step, index in enumerate(_batches(len(train_y), batch_size, seed), start=1):
        loss = F.cross_entropy(model(augment(model.prepare(train_x[index])))[1], train_y[index])
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
        "kind": kind,
        "num_train": len(train_y),
        "num_val": len(val_y),
        "num_classes": num_classes,
        "skipped": skipped,
        "train_accuracy": accuracy(model, train_x[:5000], train_y[:5000]),
        "val_accuracy": accuracy(model, val_x, val_y) if len(val_y) else math.nan,
        "steps": steps,
        "shards": redact_shards(str(shards)),  # saved with the classifier
        "train_s": time.perf_counter() - start,
    }
    save_classifier(model, out, **report)
    return report


def augment(x: torch.Tensor) -> torch.Tensor:
    """Random shifts, so features do not hinge on exact placement: up to 2 px for images
    [B, C, H, W], up to 1/16 of the clip for audio [B, 1, L] (with a random gain of -6..+2 dB)."""
    if x.dim() == 4:
        return torch.roll(x, shifts=tuple(torch.randint(-2, 3, (2,)).tolist()), dims=(2, 3))
    limit = x.shape[-1] // 16
    x = torch.roll(x, shifts=int(torch.randint(-limit, limit + 1, ())), dims=2)
    gain = torch.empty(x.shape[0], 1, 1).uniform_(0.5, 1.25)
    return (x * gain).clamp(-1.0, 1.0)
