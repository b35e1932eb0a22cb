"""The loader of one rank's stream, and DataStream: that rank's batches as one checkpointable object."""

from __future__ import annotations

import copy
import functools
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import torch
import webdataset as wds

from gandist.data.decode import media_transform
from gandist.data.health import BadDataError, DataHealth, check_bad_fraction
from gandist.data.shards import expand_shards, redact_message, redact_shards
from gandist.data.stream import ReadLimits, StreamPosition, stream_pipeline
from gandist.data.transport import BatchSlots, keep_batch, to_device_batch, to_torch_batch
from gandist.distributed import derive_seed

if TYPE_CHECKING:
    from gandist.data.config import DataConfig

log = logging.getLogger(__name__)


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
    pinned_images: bool = False,
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
    readers = world_size * max(1, cfg.num_workers)
    if cfg.mode == "exact" and len(urls) < readers and rank == 0:
        log.info(
            "data: %d shards for %d ranks x %d workers; readers that share a shard each take "
            "every k-th of its samples (every sample is still read once per epoch)",
            len(urls),
            world_size,
            max(1, cfg.num_workers),
        )
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
        limits=ReadLimits.of(cfg),
        max_image_pixels=cfg.max_image_pixels,
    )
    loader = wds.WebLoader(
        pipeline,
        batch_size=None,
        collate_fn=keep_batch,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,  # BatchSlots needs them
        prefetch_factor=prefetch_factor if cfg.num_workers > 0 else None,
        in_order=True,
        timeout=cfg.timeout_s if cfg.num_workers > 0 else 0,
        worker_init_fn=functools.partial(leave_stop_signals_to, os.getpid()),
    )
    to_torch = slots.to_torch if slots else to_torch_batch
    return loader.map(
        functools.partial(to_torch, pinned_images=True) if pinned_images else to_torch
    )


WORKER_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def leave_stop_signals_to(training_pid: int, worker_id: int = 0) -> None:
    """DataLoader `worker_init_fn`: this worker leaves stop signals to the training process.

    A scheduler's SIGTERM (Slurm on preemption and `scancel`, Kubernetes, `kill -TERM -PGID`)
    or a terminal's SIGINT reaches every process of the group at once; a worker that died of it
    would take the training down before it could checkpoint. The signals are blocked in this
    worker (and so in the `pipe:` commands it starts), and a thread waits for them: one sent by
    the training process itself (DataLoader shutting its workers down) still ends the worker,
    any other is ignored, and the training process, which got it too, checkpoints and exits.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_STOP_SIGNALS)

    def wait() -> None:
        while True:
            info = signal.sigwaitinfo(WORKER_STOP_SIGNALS)
            if info.si_pid == training_pid:
                os._exit(128 + info.si_signo)

    threading.Thread(target=wait, name="gandist-worker-signals", daemon=True).start()


class DataTimeoutError(RuntimeError):
    """No batch came from a rank's data workers within `data.timeout_s`."""


class Batches(Protocol):
    """What a training loop draws real batches from: one object per rank, checkpointable."""

    def next_batch(self) -> dict[str, Any]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def health(self) -> dict[str, float]: ...


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


STATE_KEYS = ("position", "seed", "num_skipped", "num_read", "rank", "world_size", "num_workers")


class DataStream:
    """This rank's stream of real batches from `data.shards`, as one checkpointable object.

    `next_batch` gives this rank's next full batch (CPU tensors: "image" [B, C, H, W] or "audio"
    [B, 1, L] in [-1, 1], "label" [B], and where each sample came from) and advances the
    position; `state_dict` holds that position and this rank's bad-data counts, so a resumed run
    reads on with the very next batch; `health` is the collective bad-data report of log steps.
    """

    def __init__(
        self,
        cfg: DataConfig,
        *,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
        device: torch.device | None = None,
    ) -> None:
        self.cfg, self.batch_size = cfg, batch_size
        # On CUDA, batches travel as pinned uint8 and are scaled on the GPU; elsewhere they
        # stay CPU float tensors, as before.
        self.device = device if device is not None and device.type == "cuda" else None
        self.rank, self.world_size = rank, world_size
        self.seed = seed  # of the order being read: derived anew when a resume cannot continue it
        self.reduce_sum = reduce_sum
        self.num_roles = max(1, cfg.num_workers)  # 0 workers read like 1: same positions
        self.position = StreamPosition.start(self.num_roles)
        self.counts = DataHealth()
        self._batches: Iterator[dict[str, Any]] | None = None

    def next_batch(self) -> dict[str, Any]:
        # A DataLoader draws its workers' base seed from the global torch RNG when it starts (on
        # the first batch): that draw would shift the latents of a resumed run against an
        # uninterrupted one, so the stream never touches the global RNG.
        with torch.random.fork_rng(devices=[]):
            if self._batches is None:
                self._batches = self.counts.track(iter(self._build_loader()))
            try:
                batch = next(self._batches)
            except RuntimeError as err:
                if "timed out" not in str(err):
                    raise
                raise DataTimeoutError(
                    f"rank {self.rank}: no batch from its data workers in {self.cfg.timeout_s:g} s "
                    f"(data.timeout_s): a worker is stuck reading or decoding "
                    f"{redact_shards(self.cfg.shards)}"
                ) from None
        self.position.advance(batch)
        media = batch[self.cfg.kind]
        assert media.shape[0] == self.batch_size, "every rank needs full batches"
        return batch if self.device is None else to_device_batch(batch, self.device)

    def _build_loader(self) -> wds.WebLoader:
        return build_loader(
            self.cfg,
            batch_size=self.batch_size,
            rank=self.rank,
            world_size=self.world_size,
            seed=self.seed,
            position=copy.deepcopy(self.position),
            pinned_images=self.device is not None,
        )

    def state_dict(self) -> dict[str, Any]:
        """This rank's position and bad-data counts, and the launch they belong to (plain ints
        and lists: loadable with `torch.load(weights_only=True)`). No collective."""
        return {
            "position": self.position.to_list(),
            "seed": int(self.seed),
            "num_skipped": self.counts.num_skipped,
            "num_read": self.counts.num_read,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_workers": self.cfg.num_workers,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()` of the same rank of an earlier launch.

        With the same number of ranks and workers the stream reads on with the batch that would
        have come next. Otherwise the saved positions do not fit this launch: rank 0 says what
        changed, and the stream starts a fresh order (from a seed derived from the saved one and
        its position, the same on every rank) instead of replaying the run's first batches. Bad-
        data counts continue; a rank that did not exist before (given another rank's state)
        starts its own at zero.
        """
        assert self._batches is None, "load the stream's state before its first batch"
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"a data stream state needs {list(STATE_KEYS)}; missing {missing}")
        saved = StreamPosition.from_list([int(v) for v in state["position"]])
        saved_world, saved_workers = int(state["world_size"]), int(state["num_workers"])
        if saved_world == self.world_size and len(saved.epochs) == self.num_roles:
            assert int(state["rank"]) == self.rank, "each rank loads the state it saved"
            self.seed, self.position = int(state["seed"]), saved
        else:
            if self.rank == 0:
                log.warning(
                    "the data stream was saved with %s x %s, now %s x %s: it restarts in a fresh "
                    "order (samples may repeat within this epoch)",
                    _plural(saved_world, "rank"),
                    _plural(saved_workers, "worker"),
                    _plural(self.world_size, "rank"),
                    _plural(self.cfg.num_workers, "worker"),
                )
            # Every rank consumed the same number of batches, so every rank derives this seed.
            self.seed = derive_seed(int(state["seed"]), saved.batches)
            self.position = StreamPosition.start(self.num_roles)
        if int(state["rank"]) == self.rank:
            self.counts.num_skipped = int(state["num_skipped"])
            self.counts.num_read = int(state["num_read"])

    def health(self) -> dict[str, float]:
        """`data/skipped` and `data/bad_fraction`, summed over ranks (a collective: every rank
        calls it, at log steps).

        Each rank logs the shard and key of every sample it skipped since the last call. Raises
        BadDataError (on every rank at once: the counts are global) when the fraction of bad
        samples passes `data.max_bad_fraction`; the error's `values` are what this call would
        have returned, for the caller to log before it stops.
        """
        local = torch.tensor([self.counts.num_skipped, self.counts.num_read], dtype=torch.float64)
        num_skipped, num_read = (int(v) for v in self.reduce_sum(local).tolist())
        example = ""
        for url, key, reason in self.counts.drain():
            shard, key, reason = redact_shards(url), key or "?", redact_message(reason, url)
            example = example or f"{shard} key={key}: {reason}"
            log.warning("data/skipped: rank %d shard %s key %s: %s", self.rank, shard, key, reason)
        values = {"data/skipped": num_skipped, "data/bad_fraction": num_skipped / max(1, num_read)}
        try:
            check_bad_fraction(num_skipped, num_read, self.cfg.max_bad_fraction, example)
        except BadDataError as err:
            raise BadDataError(str(err), values) from None
        return values


class BatchStream:
    """Any iterable of ready batches (in-memory, for benchmarks and tests) behind the same
    protocol as DataStream: nothing to checkpoint, no health to report."""

    def __init__(self, batches: Iterable[dict[str, Any]]) -> None:
        self._batches = iter(batches)

    def next_batch(self) -> dict[str, Any]:
        return next(self._batches)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert not state, "a BatchStream has no state to load"

    def health(self) -> dict[str, float]:
        return {}
