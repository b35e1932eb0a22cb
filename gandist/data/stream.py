"""Per-rank WebDataset streams: each rank and worker reads its own shards, forever, in batches."""

from __future__ import annotations

import functools
import io
import itertools
import logging
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info
from torchvision.transforms import functional as TF

from gandist.data import audio
from gandist.data.config import DataConfig
from gandist.data.shards import expand_shards
from gandist.data.tar import tar_members

log = logging.getLogger(__name__)

IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")
AUDIO_KEYS = audio.AUDIO_KEYS
MODES = ("exact", "resampled")


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
    """The shards read by `slot` (of `slots` = ranks x workers) in `epoch` (exact mode).

    The full list is reshuffled each epoch with a seed shared by every rank, then dealt out
    round-robin, so within an epoch no two slots read the same shard.
    """
    order = list(urls)
    random.Random(derive_seed(seed, epoch)).shuffle(order)
    return order[slot::slots]


def resampled_shards(urls: list[str], seed: int, rank: int, role: int, epoch: int) -> Iterator[str]:
    """An endless draw, with replacement, of shards for one (rank, role) in `epoch` (resampled mode)."""
    rng = random.Random(derive_seed(seed, rank, role, epoch, 1))
    while True:
        yield rng.choice(urls)


META_MEMBER = re.compile(r"__[^/]*__($|/)")  # WebDataset's `skip_meta`: not part of a sample


def read_shard(url: str, handler: Callable[[Exception], bool]) -> Iterator[dict[str, Any]]:
    """The samples (tar members grouped by key) of one shard, local or remote.

    WebDataset opens the URL (files, `pipe:` commands, http(s)) and groups members into samples
    by key; the members are read by `tar_members`, at about a fifth of the CPU of WebDataset's own
    tarfile-based reader. A shard that cannot be opened, holds a broken header or ends early
    (even at a member boundary, which tarfile takes for a shorter, valid archive) is reported
    to `handler` once, by URL, after its good samples.
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
        for source in wds.tariterators.url_opener(iter([{"url": url}]), handler=on_error):
            try:
                for name, data in tar_members(source["stream"]):
                    if not META_MEMBER.match(name):
                        yield {"fname": name, "data": data, "__url__": url}
            except Exception as exn:  # the stream itself is broken: keep the samples before it
                if not on_error(exn):
                    raise
            yield {}  # the end of a shard, for group_by_keys to hand on its last sample

    yield from wds.tariterators.group_by_keys(members(), handler=on_error)


class UnreadableDataError(RuntimeError):
    """The stream read shard after shard without a single good sample."""


class WorkerStream(IterableDataset):
    """The endless, shuffled sample stream of one (rank, worker role), epoch after epoch.

    Two modes (`data.mode`):
    - `exact`: each epoch the role reads its disjoint share of the reshuffled shard list once,
      so within an epoch no sample is read by two roles or ranks, or twice.
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

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = _worker_slot()
        if self.mode == "exact":
            check_enough_shards(len(self.urls), self.world_size, num_workers)
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
            shards: Iterable[str] = epoch_shards(self.urls, self.seed, epoch, slot, slots)
            return self._read(shards)
        shards = resampled_shards(self.urls, self.seed, self.rank, role, epoch)
        return itertools.islice(self._read(shards), self.samples_per_epoch)

    def _read(self, shards: Iterable[str]) -> Iterator[dict[str, Any]]:
        # Shard by shard, to notice a stream that reads nothing at all: without this guard,
        # a job whose every shard is unreadable would spin forever instead of failing.
        limit = max(8, 2 * len(self.urls))
        for url in shards:
            found = False
            for sample in read_shard(url, self.handler):
                found = True
                yield sample
            self._empty_shards = 0 if found else self._empty_shards + 1
            if self._empty_shards >= limit:
                raise UnreadableDataError(
                    f"read {self._empty_shards} shards in a row without one good sample (last: "
                    f"{url}); check data.shards with `gandist data verify`"
                )


def check_enough_shards(num_shards: int, world_size: int, num_workers: int) -> None:
    slots = world_size * max(1, num_workers)
    if num_shards < slots:
        raise ValueError(
            f"data.shards holds {num_shards} shards but {world_size} ranks x {max(1, num_workers)} "
            f"workers need at least {slots}, one each, in data.mode=exact: write smaller shards, "
            "lower data.num_workers, or use data.mode=resampled"
        )


@dataclass
class Skipped:
    """One sample or shard the stream could not use."""

    url: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.url} key={self.key or '?'}: {self.reason}"


class BadSample(ValueError):
    """A sample that was read but cannot be used; names its shard and key."""

    def __init__(self, url: str, key: str, reason: str) -> None:
        super().__init__(f"{url} key={key}: {reason}")
        self.url, self.key, self.reason = url, key, reason


def _locate(exn: Exception) -> Skipped:
    if isinstance(exn, BadSample):
        return Skipped(exn.url, exn.key, exn.reason)
    # WebDataset appends the shard URL (and sometimes the stream) to a tar error's args, or
    # names the open file in the message (`... @ <_io.BufferedReader name='x.tar'>`).
    args = list(getattr(exn, "args", ()))
    strings = [a for a in args[1:] if isinstance(a, str)]
    message = str(args[0]) if args else ""
    found = re.search(r" @ <.*name='([^']+)'.*>$", message)
    url = strings[-1] if strings else (found.group(1) if found else "")
    message = message[: found.start()] if found else message
    return Skipped(url, "", f"{type(exn).__name__}: {message}".strip())


class SkipCounter:
    """A WebDataset handler that skips a bad sample or shard, records where and why, and goes on.

    Unlike `wds.warn_and_continue`, it does not sleep on every bad sample. What it records is
    handed on with the next batch (`drain`), so the training process sees it even when the
    stream runs in a DataLoader worker.
    """

    def __init__(self) -> None:
        self.count = 0
        self.pending: list[Skipped] = []

    def __call__(self, exn: Exception) -> bool:
        if isinstance(exn, UnreadableDataError):
            return False  # not a bad sample: the end of the road
        skipped = _locate(exn)
        if self.pending and self.pending[-1] == skipped:
            return True  # the same tar error, passed up through a second WebDataset layer
        self.count += 1
        self.pending.append(skipped)
        log.warning("skipped bad data (%d so far): %s", self.count, skipped)
        return True

    def drain(self) -> list[Skipped]:
        pending, self.pending = self.pending, []
        return pending


class ImageTransform:
    """PIL image -> float tensor [C, H, W] in [-1, 1], converted to the configured channels and size."""

    def __init__(self, resolution: int, channels: int) -> None:
        self.resolution = resolution
        self.mode = "L" if channels == 1 else "RGB"

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return to_unit_range(torch.from_numpy(np.ascontiguousarray(self.to_uint8(image))))

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """PIL image -> uint8 array [C, H, W], converted and resized but not yet scaled.

        The stream batches these and scales whole batches in the training process
        (`to_torch_batch`): the same values as `__call__`, a quarter of the bytes to pass on.
        """
        if image.mode != self.mode:
            image = image.convert(self.mode)
        if image.size != (self.resolution, self.resolution):
            image = TF.center_crop(TF.resize(image, self.resolution), self.resolution)
        pixels = np.asarray(image)
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def to_unit_range(pixels: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 pixels (any shape) -> float32 in [-1, 1], bit for bit what `x.float() / 127.5 - 1` gives."""
    out = torch.empty(pixels.shape, dtype=torch.float32) if out is None else out
    return out.copy_(pixels).div_(127.5).sub_(1.0)


def decode_image(data: bytes) -> Image.Image:
    """Encoded image bytes -> a fully loaded PIL image (errors surface here, not later)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


class AudioTransform:
    """Encoded clip bytes -> array [1, length]; the rate must be `sample_rate`.

    Float32 in [-1, 1]; with `keep_pcm16` (the stream), 16-bit mono clips stay int16 (half the
    bytes to batch and pass on) and are scaled per batch in `to_torch_batch`.
    """

    def __init__(self, sample_rate: int, length: int, keep_pcm16: bool = False) -> None:
        self.sample_rate, self.length, self.keep_pcm16 = sample_rate, length, keep_pcm16

    def __call__(self, data: bytes) -> np.ndarray:
        return audio.clip_array(data, self.sample_rate, self.length, self.keep_pcm16)


def media_transform(
    kind: str,
    *,
    resolution: int,
    channels: int,
    sample_rate: int,
    length: int,
    keep_pcm16: bool = False,
) -> Callable[[Any], np.ndarray]:
    """The per-sample transform of `kind`: an image -> uint8 [C, R, R] (scaled later, per batch),
    clip bytes -> [1, L] float32, or int16 for 16-bit clips with `keep_pcm16`."""
    if kind == "image":
        return ImageTransform(resolution, channels).to_uint8
    return AudioTransform(sample_rate, length, keep_pcm16=keep_pcm16)


def sample_label(sample: dict[str, Any]) -> int:
    """The integer class of a raw sample (`cls` member), -1 when the shard has no labels."""
    value = sample.get("cls")
    if value is None:
        return -1
    return int(value.decode() if isinstance(value, bytes) else value)


class ToExample:
    """A raw WebDataset sample -> {image|audio, label, key, url, position}.

    Decodes only the one media member it needs. Any failure becomes a BadSample naming the
    shard and key, for the handler to count and skip.
    """

    def __init__(self, transform: Callable[[Any], np.ndarray], kind: str = "image") -> None:
        self.transform, self.kind = transform, kind
        self.keys = IMAGE_KEYS if kind == "image" else AUDIO_KEYS

    def decode(self, sample: dict[str, Any]) -> Any:
        """The transformed media member of a raw sample; BadSample naming shard and key if none."""
        key, url = sample.get("__key__", ""), sample.get("__url__", "")
        name = next((k for k in self.keys if k in sample), None)
        if name is None:
            present = ", ".join(k for k in sample if not k.startswith("__")) or "nothing"
            raise BadSample(
                url, key, f"no {self.kind} member ({'/'.join(self.keys)}); has {present}"
            )
        try:
            data = sample[name]
            return self.transform(decode_image(data) if self.kind == "image" else data)
        except Exception as err:  # any decoder error is this sample's fault, not the stream's
            raise BadSample(url, key, f"{name}: {type(err).__name__}: {err}") from None

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        key, url = sample.get("__key__", ""), sample.get("__url__", "")
        value = self.decode(sample)
        try:
            label = sample_label(sample)
        except (TypeError, ValueError) as err:
            raise BadSample(url, key, f"cls: {type(err).__name__}: {err}") from None
        return {
            self.kind: value,
            "label": label,
            "key": key,
            "url": url,
            "role": sample["__role__"],
            "epoch": sample["__epoch__"],
            "position": sample["__position__"],
        }


SHARED_MEMORY_DIR = "/dev/shm"


def shared_memory_free() -> int | None:
    """Bytes free where torch keeps shared-memory tensors (Linux); None where there is no such
    folder to ask."""
    try:
        stats = os.statvfs(SHARED_MEMORY_DIR)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


@dataclass(frozen=True)
class SlotRef:
    """Where a worker left a batch's media array: slot `slot` of worker `worker`'s slots."""

    worker: int
    slot: int
    dtype: str
    shape: tuple[int, ...]


class BatchSlots:
    """Shared-memory slots, made once and reused, that carry each worker's batches to the
    training process without copying them through a pipe.

    PyTorch's DataLoader hands a worker's tensor over in a fresh shared-memory segment whose file
    descriptor the training process fetches over a socket, and an array by pickling it through
    the worker's pipe; for the ~1 MB batches of a stream either costs both processes more CPU than
    decoding a few samples (`gandist bench data --transport`). Here the training process makes
    `per_worker` slots per worker before the workers start. A worker stacks its batch straight
    into its next slot and sends only a `SlotRef`; the training process makes the batch's tensors
    from the slot (`to_torch`, which scales them anyway, so this is the one copy) and frees it.

    The loader keeps at most `prefetch_factor` batches per worker in flight and converts one at a
    time, so `prefetch_factor + 1` slots per worker are never all busy. Should one be (a batch
    too big for a slot counts too), that batch simply goes through the pipe: a flag per slot,
    set by the worker and cleared by the training process, guards the reuse. The slots need
    persistent workers: two live passes of one loader would write into the same slots.
    """

    def __init__(self, num_workers: int, per_worker: int, slot_bytes: int) -> None:
        slot_bytes = -(-slot_bytes // 64) * 64  # every slot 64-byte aligned, for any dtype view
        self.data = torch.empty((num_workers, per_worker, slot_bytes), dtype=torch.uint8)
        self.data.share_memory_()
        self.busy = torch.zeros((num_workers, per_worker), dtype=torch.uint8).share_memory_()

    @classmethod
    def for_config(
        cls, cfg: DataConfig, batch_size: int, prefetch_factor: int
    ) -> BatchSlots | None:
        """Slots that fit any batch of the stream: uint8 images, or audio as float32 (int16
        clips need half that; a batch that mixes in other formats is float32).

        None, with a warning, when they would take more than half the free shared memory (other
        ranks on the node need theirs): a full /dev/shm kills a process with a bus error.
        """
        sample_bytes = cfg.channels * cfg.resolution**2 if cfg.kind == "image" else 4 * cfg.length
        per_worker, slot_bytes = prefetch_factor + 1, batch_size * sample_bytes
        needed, free = cfg.num_workers * per_worker * slot_bytes, shared_memory_free()
        if free is not None and needed > free // 2:
            log.warning(
                "data: batch slots need %.0f MiB of shared memory but %s has %.0f MiB free; "
                "workers send batches through their pipes instead, which costs more CPU. Give "
                "the job more (docker: --shm-size) or lower data.num_workers.",
                needed / 2**20,
                SHARED_MEMORY_DIR,
                free / 2**20,
            )
            return None
        return cls(cfg.num_workers, per_worker, slot_bytes)

    def stacker(self) -> Callable[[list[np.ndarray]], np.ndarray | SlotRef]:
        """This worker's stacking function for one pass; in-process, plain `np.stack`.

        A new pass (a fresh `iter` over the loader) means the loader dropped the previous pass's
        batches still in flight, unread: their slots are free again.
        """
        info = get_worker_info()
        if info is None:
            return np.stack
        data, busy = self.data[info.id].numpy(), self.busy[info.id].numpy()
        busy[:] = 0
        turn = 0  # slots are taken in turn: the oldest is the likeliest to be free

        def stack(values: list[np.ndarray]) -> np.ndarray | SlotRef:
            nonlocal turn
            shape = (len(values), *values[0].shape)
            nbytes = int(np.prod(shape)) * values[0].dtype.itemsize
            order = [(turn + i) % len(busy) for i in range(len(busy))]
            slot = next((i for i in order if not busy[i]), None)
            if slot is None or nbytes > data.shape[1]:
                return np.stack(values)  # through the pipe
            np.stack(values, out=data[slot, :nbytes].view(values[0].dtype).reshape(shape))
            busy[slot], turn = 1, (slot + 1) % len(busy)
            return SlotRef(info.id, slot, values[0].dtype.str, shape)

        return stack

    def to_torch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """`to_torch_batch` for batches whose arrays may wait in slots; frees those slots."""
        refs = {name: ref for name, ref in batch.items() if isinstance(ref, SlotRef)}
        slots = {name: self.data[ref.worker, ref.slot].numpy() for name, ref in refs.items()}
        for name, ref in refs.items():
            nbytes = int(np.prod(ref.shape)) * np.dtype(ref.dtype).itemsize
            batch[name] = slots[name][:nbytes].view(ref.dtype).reshape(ref.shape)
        batch = to_torch_batch(batch)
        for name, ref in refs.items():
            if batch[name].data_ptr() == slots[name].ctypes.data:
                batch[name] = batch[name].clone()  # float32 audio: kept as is, so copy it out
            self.busy[ref.worker, ref.slot] = 0
        return batch


def collate_examples(
    examples: list[dict[str, Any]],
    stack: Callable[[list[np.ndarray]], np.ndarray | SlotRef] = np.stack,
) -> dict[str, Any]:
    """Examples -> one batch (uint8 images, int16 or float32 audio), made in the worker.

    `stack` puts the media arrays together (in a worker: into a `BatchSlots` slot);
    `to_torch_batch` or `BatchSlots.to_torch` turns the batch into tensors in the training process.
    """
    last = examples[-1]  # a batch comes from one worker role; its last sample marks the position
    kind = "image" if "image" in last else "audio"
    values = [e[kind] for e in examples]
    if len({v.dtype for v in values}) > 1:  # 16-bit clips among others: all float
        values = [audio.pcm16_to_float(v) if v.dtype == np.int16 else v for v in values]
    return {
        kind: stack(values),  # [B, C, H, W] or [B, 1, L]
        "label": np.array([e["label"] for e in examples], dtype=np.int64),  # [B]
        "key": [e["key"] for e in examples],
        "url": [e["url"] for e in examples],
        "role": last["role"],
        "epoch": last["epoch"],
        "position": last["position"],
    }


def to_torch_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """A collated batch, in the training process: arrays -> tensors, uint8 images and int16
    clips -> float in [-1, 1]."""
    if "audio" in batch and batch["audio"].dtype == np.int16:
        batch["audio"] = audio.pcm16_to_float(batch["audio"])  # [B, 1, L]
    for name in ("image", "audio", "label"):
        if name in batch:
            batch[name] = torch.as_tensor(batch[name])
    if "image" in batch and batch["image"].dtype == torch.uint8:
        batch["image"] = to_unit_range(batch["image"])  # [B, C, H, W] float in [-1, 1]
    return batch


def keep_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """The DataLoader's collate_fn: batches arrive made, and stay arrays until `to_torch_batch`."""
    return batch


class BatchWithReport:
    """Batches examples and attaches what the handler skipped since the previous batch.

    Each batch carries `skipped` (a list of [url, key, reason]) and `num_read` (samples and
    shards read for it, good or bad), so the training process can count bad data exactly even
    though the reading happens in worker processes.
    """

    def __init__(
        self, batch_size: int, handler: SkipCounter, slots: BatchSlots | None = None
    ) -> None:
        self.batch_size, self.handler, self.slots = batch_size, handler, slots

    def __call__(self, examples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        stack = self.slots.stacker() if self.slots else np.stack
        collate = functools.partial(collate_examples, stack=stack)
        for batch in wds.batched(self.batch_size, collation_fn=collate, partial=False)(examples):
            skipped = self.handler.drain()
            batch["skipped"] = [[s.url, s.key, s.reason] for s in skipped]
            batch["num_read"] = self.batch_size + len(skipped)
            yield batch


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
        ),
        wds.map(ToExample(transform, kind), handler=handler),
        BatchWithReport(batch_size, handler, slots),
    )


def samples_per_role_epoch(cfg: DataConfig, batch_size: int) -> int:
    """Resampled mode: samples each worker role reads per epoch.

    `data.epoch_batches` per rank is shared out over the workers, rounded up to whole batches
    per worker, so a rank's epoch is `num_workers * ceil(epoch_batches / num_workers)` batches.
    """
    roles = max(1, cfg.num_workers)
    return -(-cfg.epoch_batches // roles) * batch_size


def build_loader(
    cfg: DataConfig,
    *,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    position: StreamPosition | None = None,
) -> wds.WebLoader:
    """A DataLoader over this rank's stream (images or audio, per `data.kind`), yielding
    {"image" [B, C, H, W] | "audio" [B, 1, L] float in [-1, 1], "label" [B], ...} batches.

    Workers decode and batch, and leave each batch in a reused shared-memory slot
    (`BatchSlots`); the training process only scales it. The loader is deliberately not passed
    through `accelerator.prepare`: that would make rank 0 read every batch and broadcast it,
    instead of each rank streaming its own shards. Batches come from the workers strictly in turn
    (DataLoader's in-order mode), which `StreamPosition` relies on.
    """
    urls = expand_shards(cfg.shards)
    if cfg.mode == "exact":
        check_enough_shards(len(urls), world_size, cfg.num_workers)
    transform = media_transform(  # scaled per batch in `to_torch_batch`
        cfg.kind,
        resolution=cfg.resolution,
        channels=cfg.channels,
        sample_rate=cfg.sample_rate,
        length=cfg.length,
        keep_pcm16=True,
    )
    prefetch_factor = 4
    slots = BatchSlots.for_config(cfg, batch_size, prefetch_factor) if cfg.num_workers else None
    pipeline = stream_pipeline(
        urls,
        kind=cfg.kind,
        transform=transform,
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        seed=seed,
        shuffle_buffer=cfg.shuffle_buffer,
        mode=cfg.mode,
        samples_per_epoch=samples_per_role_epoch(cfg, batch_size),
        position=position,
        slots=slots,
    )
    loader = wds.WebLoader(
        pipeline,
        batch_size=None,
        collate_fn=keep_batch,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,  # BatchSlots needs them
        prefetch_factor=prefetch_factor if cfg.num_workers > 0 else None,
        in_order=True,
    )
    return loader.map(slots.to_torch if slots else to_torch_batch)


@dataclass
class DataHealth:
    """Bad-data accounting of one rank: what the stream skipped, out of how much it read."""

    num_skipped: int = 0
    num_read: int = 0
    pending: list[list[str]] = field(default_factory=list)
    """Skipped [url, key, reason] not yet reported to the trackers."""

    def track(self, batches: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Pass batches through, taking off and counting their skip reports."""
        for batch in batches:
            skipped = batch.pop("skipped", [])
            self.num_skipped += len(skipped)
            self.num_read += int(batch.pop("num_read", 0))
            self.pending += skipped
            yield batch

    def drain(self) -> list[list[str]]:
        pending, self.pending = self.pending, []
        return pending


class BadDataError(RuntimeError):
    """More of the stream was bad than `data.max_bad_fraction` allows; raised on every rank."""


def check_bad_fraction(num_skipped: int, num_read: int, max_fraction: float, example: str) -> None:
    """Raise BadDataError when `num_skipped / num_read` exceeds `max_fraction`.

    Called with counts summed over all ranks, so every rank reaches the same verdict and none
    is left waiting in a collective for a rank that stopped.
    """
    if num_read and num_skipped / num_read > max_fraction:
        raise BadDataError(
            f"{num_skipped} of {num_read} samples read were bad ({num_skipped / num_read:.1%} > "
            f"data.max_bad_fraction={max_fraction:g}); e.g. {example or 'see the log'}. "
            "Find them all with `gandist data verify SHARDS`"
        )
