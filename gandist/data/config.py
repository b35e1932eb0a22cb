"""The data section of the config: which shards, how they are decoded and streamed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gandist.errors import require as _require
from gandist.errors import require_finite

DataKind = Literal["image", "audio"]
DataMode = Literal["exact", "resampled"]


@dataclass
class DataConfig:
    shards: str = "data/glyphs"
    """Training shards: a folder of .tar files, a file, a brace pattern (`d/train-{000..009}.tar`), `pipe:CMD` or an http(s) URL; `::` joins several."""
    shards_b: str = ""
    """Unpaired translation (train.algorithm=cyclegan): the shards of domain B, in any form `shards` takes; `shards` holds domain A. The two sets may differ in size."""
    resolution: int = 32
    """Side in pixels the images are resized to if the shards hold another size."""
    channels: int = 3
    """1 for grayscale, 3 for RGB; images are converted on decode."""
    num_workers: int = 2
    """DataLoader worker processes per rank (0 decodes in the training process)."""
    shuffle_buffer: int = 1000
    """Samples held in each worker's shuffle buffer."""
    kind: DataKind = "image"
    """What the shards hold: `image` (batches of [B, C, H, W]) or `audio` (batches of [B, 1, L])."""
    mode: DataMode = "exact"
    """`exact`: each epoch every shard once, split over ranks and workers (needs >= ranks x workers
    shards); `resampled`: shards drawn with replacement, `epoch_batches` batches per rank per epoch."""
    epoch_batches: int = 1000
    """Resampled mode: batches per rank per epoch (rounded up to a multiple of num_workers)."""
    sample_rate: int = 16000
    """Audio: sample rate in Hz the shards were made at; clips at another rate are skipped as bad."""
    length: int = 16384
    """Audio: samples per clip; longer clips are centre-cropped, shorter ones zero-padded."""
    max_bad_fraction: float = 0.05
    """Training stops (on every rank) once more than this fraction of the samples read was bad."""
    max_member_bytes: int = 256 << 20
    """Largest tar member (after decompression) a shard may hold; a larger one ends that shard as bad data."""
    max_image_pixels: int = 1 << 26
    """Largest image (width x height, checked from its header before decoding) a sample may hold; larger ones are skipped as bad."""
    timeout_s: float = 600.0
    """Seconds the training process waits for a batch from its data workers before it stops with an error naming the stuck stream (num_workers >= 1)."""
    read_timeout_s: float = 60.0
    """http(s) and `pipe:` shards: seconds without a byte before a read is retried (http from where it stopped; a command is killed and started again); after read_retries the shard is skipped as bad data."""
    read_retries: int = 2
    """http(s) and `pipe:` shards: retries of a stalled (http: or failed) read before the shard is skipped."""

    def __post_init__(self) -> None:
        require_finite(self, "data")
        _require(self.resolution >= 4, f"data.resolution must be >= 4, got {self.resolution}")
        _require(self.channels in (1, 3), f"data.channels must be 1 or 3, got {self.channels}")
        _require(self.num_workers >= 0, f"data.num_workers must be >= 0, got {self.num_workers}")
        _require(
            self.shuffle_buffer >= 0, f"data.shuffle_buffer must be >= 0, got {self.shuffle_buffer}"
        )
        _require(
            self.epoch_batches >= 1, f"data.epoch_batches must be >= 1, got {self.epoch_batches}"
        )
        _require(self.sample_rate >= 1, f"data.sample_rate must be >= 1 Hz, got {self.sample_rate}")
        _require(self.length >= 16, f"data.length must be >= 16 samples, got {self.length}")
        _require(
            0.0 <= self.max_bad_fraction <= 1.0,
            f"data.max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}",
        )
        for key in ("max_member_bytes", "max_image_pixels"):
            value = getattr(self, key)
            _require(value >= 1, f"data.{key} must be >= 1, got {value}")
        for key in ("timeout_s", "read_timeout_s"):
            value = getattr(self, key)
            _require(value > 0, f"data.{key} must be > 0 seconds, got {value}")
        _require(self.read_retries >= 0, f"data.read_retries must be >= 0, got {self.read_retries}")
