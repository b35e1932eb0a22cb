"""Batch transport: examples -> batches in the workers, handed over in shared-memory slots."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import get_worker_info

from gandist.data import audio
from gandist.data.decode import to_unit_range
from gandist.data.health import SkipCounter

if TYPE_CHECKING:
    from gandist.data.config import DataConfig

log = logging.getLogger(__name__)

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

    def to_torch(self, batch: dict[str, Any], pinned_images: bool = False) -> dict[str, Any]:
        """`to_torch_batch` for batches whose arrays may wait in slots; frees those slots."""
        refs = {name: ref for name, ref in batch.items() if isinstance(ref, SlotRef)}
        slots = {name: self.data[ref.worker, ref.slot].numpy() for name, ref in refs.items()}
        for name, ref in refs.items():
            nbytes = int(np.prod(ref.shape)) * np.dtype(ref.dtype).itemsize
            batch[name] = slots[name][:nbytes].view(ref.dtype).reshape(ref.shape)
        batch = to_torch_batch(batch, pinned_images)
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


def to_torch_batch(batch: dict[str, Any], pinned_images: bool = False) -> dict[str, Any]:
    """A collated batch, in the training process: arrays -> tensors, uint8 images and int16
    clips -> float in [-1, 1].

    `pinned_images` (CUDA training): uint8 images are copied into page-locked memory instead,
    a quarter of float32's bytes for the copy to the GPU, which can then run asynchronously;
    the GPU scales them (`to_device_batch`)."""
    if "audio" in batch and batch["audio"].dtype == np.int16:
        batch["audio"] = audio.pcm16_to_float(batch["audio"])  # [B, 1, L]
    for name in ("image", "audio", "label"):
        if name in batch:
            batch[name] = torch.as_tensor(batch[name])
    if "image" in batch and batch["image"].dtype == torch.uint8:
        if pinned_images:
            image = batch["image"]
            pinned = torch.empty(image.shape, dtype=torch.uint8, pin_memory=True)
            batch["image"] = pinned.copy_(image)  # [B, C, H, W] uint8, page-locked
        else:
            batch["image"] = to_unit_range(batch["image"])  # [B, C, H, W] float in [-1, 1]
    return batch


def to_device_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A batch's tensors on `device` (copies that do not block the CPU), uint8 images scaled
    there to float in [-1, 1] with the same arithmetic as on the CPU (bit-identical values)."""
    for name in ("image", "audio", "label"):
        if name in batch:
            batch[name] = batch[name].to(device, non_blocking=True)
    image = batch.get("image")
    if image is not None and image.dtype == torch.uint8:
        scaled = torch.empty(image.shape, dtype=torch.float32, device=device)
        batch["image"] = to_unit_range(image, out=scaled)
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
