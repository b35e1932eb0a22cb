"""Per-rank sample streams: each rank and worker reads its own share of the shards, forever, in batches."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from gandist.data.decode import ToExample
from gandist.data.health import BadSample, SkipCounter, UnreadableDataError
from gandist.data.limits import MAX_IMAGE_PIXELS
from gandist.data.remote import open_http_shard, open_pipe_shard
from gandist.data.shards import redact_shards
from gandist.data.tar import MAX_MEMBER_BYTES, EndlessShardError, tar_members
from gandist.data.transport import BatchSlots, BatchWithReport
from gandist.distributed import derive_seed

if TYPE_CHECKING:
    from gandist.data.config import DataConfig

MODES = ("exact", "resampled")


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


@dataclass(frozen=True)
class ShardShare:
    """One shard as one reader reads it: the samples at read indices `part`, `part + parts`, ..."""

    url: str
    part: int = 0
    parts: int = 1


def epoch_shares(urls: list[str], seed: int, epoch: int, slot: int, slots: int) -> list[ShardShare]:
    """What reader `slot` (of `slots` = ranks x workers) reads in `epoch` (exact mode).

    The full list is reshuffled each epoch with a seed shared by every rank. With at least as
    many shards as readers, it is dealt out round-robin: within an epoch no two readers read
    the same shard. With fewer, shard `i` goes to readers `i, i + n, i + 2n, ...` (n shards),
    and each of the k readers of a shard takes every k-th of its samples, in the order the
    shard holds them: still every sample once per epoch, at the price of each of them reading
    (not decoding) the whole shard.
    """
    order = list(urls)
    random.Random(derive_seed(seed, epoch)).shuffle(order)
    if len(order) >= slots:
        return [ShardShare(url) for url in order[slot::slots]]
    index = slot % len(order)
    return [ShardShare(order[index], slot // len(order), len(range(index, slots, len(order))))]


def resampled_shards(urls: list[str], seed: int, rank: int, role: int, epoch: int) -> Iterator[str]:
    """An endless draw, with replacement, of shards for one (rank, role) in `epoch` (resampled mode)."""
    rng = random.Random(derive_seed(seed, rank, role, epoch, 1))
    while True:
        yield rng.choice(urls)


META_MEMBER = re.compile(r"__[^/]*__($|/)")  # WebDataset's `skip_meta`: not part of a sample
MAX_SAMPLE_MEMBERS = 1024
"""Members one sample may have (image, label, metadata, ...): a stream that keeps adding members
to one sample (or only metadata) would otherwise grow it in memory without end."""


@dataclass(frozen=True)
class ReadLimits:
    """What reading one shard may cost: its largest member, and for http(s) the wait for a byte."""

    max_member_bytes: int = MAX_MEMBER_BYTES
    read_timeout_s: float = 60.0
    read_retries: int = 2

    @classmethod
    def of(cls, cfg: DataConfig) -> ReadLimits:
        """The limits the `data` section sets (`data.max_member_bytes`, `data.read_*`)."""
        return cls(cfg.max_member_bytes, cfg.read_timeout_s, cfg.read_retries)


def _open_shards(urls: Iterator[dict[str, Any]], limits: ReadLimits, handler: Callable) -> Any:
    # http(s) and `pipe:` through our readers, which have a read timeout (WebDataset's curl and
    # pipe have none: a server or command that stops sending would hold the reader forever);
    # the rest (local files) through WebDataset.
    for source in urls:
        url = source["url"]
        if url.startswith(("http://", "https://")):
            stream = open_http_shard(url, limits.read_timeout_s, limits.read_retries)
        elif url.startswith("pipe:"):
            stream = open_pipe_shard(
                url[len("pipe:") :], limits.read_timeout_s, limits.read_retries
            )
        else:
            yield from wds.tariterators.url_opener(iter([source]), handler=handler)
            continue
        try:
            yield source | {"stream": stream}
        finally:  # also when the reader stops early: no connection left open
            stream.close()


def read_shard(
    url: str, handler: Callable[[Exception], bool], limits: ReadLimits = ReadLimits()
) -> Iterator[dict[str, Any]]:
    """The samples (tar members grouped by key) of one shard, local or remote.

    WebDataset opens the URL (files, `pipe:` commands; http(s) is read by `open_http_shard`,
    with a read timeout and retries) and groups members into samples by key; the members are
    read by `tar_members`, at about a fifth of the CPU of WebDataset's own tarfile-based reader.
    A shard that cannot be opened, holds a broken header or a member over
    `limits.max_member_bytes`, stalls, or ends early (even at a member boundary, which tarfile
    takes for a shorter, valid archive) is reported to `handler` once, by URL, after its good
    samples.
    """
    reported: list[bool] = []

    def on_error(exn: Exception) -> bool:
        # Every layer of the reader may see the same broken stream: report it once, by URL.
        if reported:
            return True
        reported.append(True)
        message = str(exn.args[0]) if getattr(exn, "args", None) else str(exn)
        reason = f"{type(exn).__name__}: {message.split(' @ <', 1)[0]}"
        return handler(BadSample(url, "", reason))

    def members() -> Iterator[dict[str, Any]]:
        for source in _open_shards(iter([{"url": url}]), limits, on_error):
            try:
                key, run = None, 0  # members in a row of one sample (or metadata)
                for name, data in tar_members(source["stream"], limits.max_member_bytes):
                    meta = META_MEMBER.match(name)
                    prefix = None if meta else wds.tariterators.base_plus_ext(name)[0]
                    key, run = (key, run + 1) if meta or prefix == key else (prefix, 1)
                    if run > MAX_SAMPLE_MEMBERS:  # one sample growing without end
                        raise EndlessShardError(
                            f"more than {MAX_SAMPLE_MEMBERS} members in a row for sample {key!r}"
                        )
                    if not meta:
                        yield {"fname": name, "data": data, "__url__": url}
            except Exception as exn:  # the stream itself is broken: keep the samples before it
                if not on_error(exn):
                    raise
            yield {}  # the end of a shard, for group_by_keys to hand on its last sample

    yield from wds.tariterators.group_by_keys(members(), handler=on_error)


class WorkerStream(IterableDataset):
    """The endless, shuffled sample stream of one (rank, worker role), epoch after epoch.

    Two modes (`data.mode`):
    - `exact`: each epoch the role reads its disjoint share of the reshuffled shard list once
      (`epoch_shares`: whole shards, or with fewer shards than readers every k-th sample of a
      shard shared by k readers), so within an epoch no sample is read by two roles or ranks,
      or twice.
    - `resampled`: each epoch the role draws shards at random with replacement and stops after
      `samples_per_epoch` samples, so every rank has the same batch count per epoch whatever the
      number of shards (WebDataset's `resampled=True` + `with_epoch`, with seeds we control).

    Either way an epoch of a role is deterministic from (seed, rank, role, epoch) and is passed
    through a shuffle buffer drained at the epoch's end, so a position is (epoch, samples read
    in it): resuming replays the tar members of that one epoch without decoding them. Because the
    stream never ends, every rank can draw the same number of batches and DDP never waits on a
    rank that ran dry.

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
        mode: str = "exact",
        samples_per_epoch: int = 0,
        limits: ReadLimits = ReadLimits(),
    ) -> None:
        super().__init__()
        assert mode in MODES, mode
        assert mode == "exact" or samples_per_epoch >= 1, "resampled mode needs samples_per_epoch"
        self.urls = list(urls)
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle_buffer = shuffle_buffer
        self.position = position
        self.handler = handler or SkipCounter()
        self.mode, self.samples_per_epoch = mode, samples_per_epoch
        self._empty_shards = 0  # consecutive shards that gave no sample
        self.limits = limits

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = _worker_slot()
        position = self.position or StreamPosition.start(num_workers)
        assert len(position.epochs) == num_workers, "a stream position is tied to its worker count"
        role = (worker + position.batches) % num_workers
        start_epoch, skip = position.epochs[role], position.samples[role]
        for epoch in itertools.count(start_epoch):
            samples = self._epoch_samples(role, num_workers, epoch)
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

    def _epoch_samples(self, role: int, num_workers: int, epoch: int) -> Iterator[dict[str, Any]]:
        """The raw samples (tar members grouped by key) of one role's epoch, before shuffling."""
        if self.mode == "exact":
            slot, slots = self.rank * num_workers + role, self.world_size * num_workers
            shares = epoch_shares(self.urls, self.seed, epoch, slot, slots)
            return self._read(shares, f"reader {slot} of {slots} (ranks x workers), epoch {epoch}")
        shards = resampled_shards(self.urls, self.seed, self.rank, role, epoch)
        return itertools.islice(self._read(map(ShardShare, shards)), self.samples_per_epoch)

    def _read(self, shares: Iterable[ShardShare], reader: str = "") -> Iterator[dict[str, Any]]:
        # Shard by shard, to notice a stream that reads nothing at all: without this guard,
        # a job whose every shard is unreadable would spin forever instead of failing.
        limit = max(8, 2 * len(self.urls))
        num_read = num_taken = 0
        for share in shares:
            # A shard shared by several readers is reported broken by the first of them only.
            handler = self.handler if share.part == 0 else _ignore
            found = False
            for index, sample in enumerate(read_shard(share.url, handler, self.limits)):
                found, num_read = True, num_read + 1
                if index % share.parts == share.part:
                    num_taken += 1
                    yield sample
            self._empty_shards = 0 if found else self._empty_shards + 1
            if self._empty_shards >= limit:
                raise UnreadableDataError(
                    f"read {self._empty_shards} shards in a row without one good sample (last: "
                    f"{redact_shards(share.url)}); check data.shards with `gandist data verify`"
                )
        if num_read and not num_taken:  # it would read on, epoch after empty epoch, forever
            raise UnreadableDataError(
                f"data.mode=exact: {reader} gets none of the {num_read} samples of its shard, "
                "which it shares with other readers: write more samples per shard, lower "
                "data.num_workers, or use data.mode=resampled"
            )


def _ignore(exn: Exception) -> bool:
    return True


def stream_pipeline(
    urls: list[str],
    *,
    kind: str,
    transform: Callable[[Any], np.ndarray],
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    shuffle_buffer: int,
    mode: str = "exact",
    samples_per_epoch: int = 0,
    position: StreamPosition | None = None,
    slots: BatchSlots | None = None,
    limits: ReadLimits = ReadLimits(),
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> wds.DataPipeline:
    """The endless, batched stream of one rank (split further across its workers, which hand
    their batches over in `slots` when given)."""
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
            mode=mode,
            samples_per_epoch=samples_per_epoch,
            limits=limits,
        ),
        wds.map(ToExample(transform, kind, max_image_pixels), handler=handler),
        BatchWithReport(batch_size, handler, slots),
    )
