"""Per-rank WebDataset streams: each rank and worker reads its own shards, forever, in batches."""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info
from torchvision.transforms import functional as TF

from gandist.config import DataConfig
from gandist.data.shards import expand_shards

log = logging.getLogger(__name__)

IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")


def derive_seed(*parts: int) -> int:
    """A 32-bit seed that depends on every part (seed, rank, worker, epoch, ...), not their sum."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


@dataclass
class StreamPosition:
    """Where one rank's stream stands, saved in checkpoints so a resumed run reads on from there.

    Worker roles are served round-robin by the DataLoader, so `batches` (consumed by this rank)
    says which role serves next; `epochs[w]` and `samples[w]` say how far role `w` had read
    within its current epoch when its last consumed batch was made.
    """

    batches: int = 0
    epochs: list[int] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)

    @classmethod
    def start(cls, num_roles: int) -> StreamPosition:
        return cls(0, [0] * num_roles, [0] * num_roles)

    def advance(self, batch: dict[str, Any]) -> None:
        """Record a batch the training loop has consumed."""
        role = int(batch["role"])
        self.batches += 1
        self.epochs[role] = int(batch["epoch"])
        self.samples[role] = int(batch["position"])

    def to_list(self) -> list[int]:
        return [self.batches, *self.epochs, *self.samples]

    @classmethod
    def from_list(cls, values: list[int]) -> StreamPosition:
        num_roles = (len(values) - 1) // 2
        return cls(int(values[0]), list(values[1 : 1 + num_roles]), list(values[1 + num_roles :]))


def _worker_slot() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def epoch_shards(urls: list[str], seed: int, epoch: int, slot: int, slots: int) -> list[str]:
    """The shards read by `slot` (of `slots` = ranks x workers) in `epoch`.

    The full list is reshuffled each epoch with a seed shared by every rank, then dealt out
    round-robin, so within an epoch no two slots read the same shard.
    """
    order = list(urls)
    random.Random(derive_seed(seed, epoch)).shuffle(order)
    return order[slot::slots]


class WorkerStream(IterableDataset):
    """The endless, shuffled sample stream of one (rank, worker role), epoch after epoch.

    Each epoch the role reads its disjoint share of shards through a shuffle buffer that is
    drained at the epoch's end, so a position is just (epoch, samples read in it): resuming
    replays the tar members of that one epoch share, without decoding them. Because the stream
    never ends, every rank can draw the same number of batches and DDP never waits on a rank
    that ran dry.

    Worker `k` of the loader plays role `(k + role_offset) % num_workers`: a loader resumed
    after `b` batches starts with the role that would have served batch `b`.
    """

    def __init__(
        self,
        urls: list[str],
        *,
        rank: int,
        world_size: int,
        seed: int,
        shuffle_buffer: int,
        position: StreamPosition | None = None,
        handler: SkipCounter | None = None,
    ) -> None:
        super().__init__()
        self.urls = list(urls)
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle_buffer = shuffle_buffer
        self.position = position
        self.handler = handler or SkipCounter()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = _worker_slot()
        check_enough_shards(len(self.urls), self.world_size, num_workers)
        position = self.position or StreamPosition.start(num_workers)
        assert len(position.epochs) == num_workers, "a stream position is tied to its worker count"
        role = (worker + position.batches) % num_workers
        slot, slots = self.rank * num_workers + role, self.world_size * num_workers
        start_epoch, skip = position.epochs[role], position.samples[role]
        for epoch in itertools.count(start_epoch):
            shards = epoch_shards(self.urls, self.seed, epoch, slot, slots)
            samples = wds.tarfile_to_samples(handler=self.handler)(iter({"url": u} for u in shards))
            if self.shuffle_buffer > 1:
                rng = random.Random(derive_seed(self.seed, self.rank, role, epoch))
                samples = wds.shuffle(self.shuffle_buffer, self.shuffle_buffer // 2, rng=rng)(
                    samples
                )
            for index, sample in enumerate(samples, start=1):
                if epoch == start_epoch and index <= skip:
                    continue  # already trained on before the checkpoint
                sample["__role__"], sample["__epoch__"], sample["__position__"] = role, epoch, index
                yield sample


def check_enough_shards(num_shards: int, world_size: int, num_workers: int) -> None:
    slots = world_size * max(1, num_workers)
    if num_shards < slots:
        raise ValueError(
            f"data.shards holds {num_shards} shards but {world_size} ranks x {max(1, num_workers)} "
            f"workers need at least {slots}, one each: write smaller shards or lower data.num_workers"
        )


class SkipCounter:
    """A WebDataset handler that skips a bad sample or shard, counts it and logs why.

    Unlike `wds.warn_and_continue`, it does not sleep on every bad sample.
    """

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, exn: Exception) -> bool:
        self.count += 1
        log.warning("skipped bad data (%d so far): %s: %s", self.count, type(exn).__name__, exn)
        return True


class ImageTransform:
    """PIL image -> float tensor [C, H, W] in [-1, 1], converted to the configured channels and size."""

    def __init__(self, resolution: int, channels: int) -> None:
        self.resolution = resolution
        self.mode = "L" if channels == 1 else "RGB"

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert(self.mode)
        if image.size != (self.resolution, self.resolution):
            image = TF.center_crop(TF.resize(image, self.resolution), self.resolution)
        return TF.pil_to_tensor(image).float().div_(127.5).sub_(1.0)


class ToExample:
    """A decoded WebDataset sample -> {image, label, key, url}; label is -1 when the shard has none."""

    def __init__(self, transform: ImageTransform) -> None:
        self.transform = transform

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        image = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
        if image is None:
            raise KeyError(f"sample {sample.get('__key__')} has no image ({', '.join(IMAGE_KEYS)})")
        return {
            "image": self.transform(image),
            "label": int(sample.get("cls", -1)),
            "key": sample["__key__"],
            "url": sample.get("__url__", ""),
            "role": sample["__role__"],
            "epoch": sample["__epoch__"],
            "position": sample["__position__"],
        }


def collate_examples(examples: list[dict[str, Any]]) -> dict[str, Any]:
    last = examples[-1]  # a batch comes from one worker role; its last sample marks the position
    return {
        "image": torch.stack([e["image"] for e in examples]),  # [B, C, H, W]
        "label": torch.tensor([e["label"] for e in examples]),  # [B]
        "key": [e["key"] for e in examples],
        "url": [e["url"] for e in examples],
        "role": last["role"],
        "epoch": last["epoch"],
        "position": last["position"],
    }


def image_pipeline(
    urls: list[str],
    *,
    batch_size: int,
    resolution: int,
    channels: int,
    rank: int,
    world_size: int,
    seed: int,
    shuffle_buffer: int,
    position: StreamPosition | None = None,
) -> wds.DataPipeline:
    """The endless, batched image stream of one rank (split further across its workers)."""
    handler = SkipCounter()
    return wds.DataPipeline(
        WorkerStream(
            urls,
            rank=rank,
            world_size=world_size,
            seed=seed,
            shuffle_buffer=shuffle_buffer,
            position=position,
            handler=handler,
        ),
        wds.decode("pil", handler=handler),
        wds.map(ToExample(ImageTransform(resolution, channels)), handler=handler),
        wds.batched(batch_size, collation_fn=collate_examples, partial=False),
    )


def build_image_loader(
    cfg: DataConfig,
    *,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    position: StreamPosition | None = None,
) -> torch.utils.data.DataLoader:
    """A DataLoader over this rank's stream; workers decode and batch, the loader only forwards.

    It is deliberately not passed through `accelerator.prepare`: that would make rank 0 read
    every batch and broadcast it, instead of each rank streaming its own shards. Batches come
    from the workers strictly in turn (DataLoader's in-order mode), which `StreamPosition`
    relies on.
    """
    urls = expand_shards(cfg.shards)
    check_enough_shards(len(urls), world_size, cfg.num_workers)
    pipeline = image_pipeline(
        urls,
        batch_size=batch_size,
        resolution=cfg.resolution,
        channels=cfg.channels,
        rank=rank,
        world_size=world_size,
        seed=seed,
        shuffle_buffer=cfg.shuffle_buffer,
        position=position,
    )
    return wds.WebLoader(
        pipeline,
        batch_size=None,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        prefetch_factor=4 if cfg.num_workers > 0 else None,
        in_order=True,
    )
