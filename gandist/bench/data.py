"""`gandist bench data`: stream samples/s against a plain one-process read-and-decode loop."""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import statistics
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds

from gandist.data.audio import load_clip
from gandist.data.config import DataConfig
from gandist.data.decode import AUDIO_KEYS, IMAGE_KEYS, ImageTransform, decode_image
from gandist.data.loader import build_loader
from gandist.data.shards import expand_shards, read_manifest
from gandist.data.tar import tar_members
from gandist.data.transport import BatchSlots, keep_batch, to_torch_batch


def _members(urls: list[str]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every regular member, shard after shard, forever (local shards), read
    by the stream's own `tar_members`."""
    for url in itertools.cycle(urls):
        with open(url, "rb") as stream:
            yield from tar_members(stream)


def _media_members(urls: list[str]) -> Iterator[tuple[str, bytes]]:
    """(extension, bytes) of every media member, forever (`_members`)."""
    media = set(IMAGE_KEYS) | set(AUDIO_KEYS)
    for name, data in _members(urls):
        ext = name.split(".", 1)[-1].lower() if "." in name else ""
        if ext in media:
            yield ext, data


def _tarfile_members(urls: list[str]) -> Iterator[bytes]:
    """Every regular member, forever, read by Python's tarfile from the local file."""
    for url in itertools.cycle(urls):
        with tarfile.open(url) as tar:
            for member in tar:
                if member.isreg():
                    yield tar.extractfile(member).read()


def _webdataset_members(urls: list[str]) -> Iterator[bytes]:
    """Every regular member, forever, read by WebDataset's tar iterator (tarfile, stream mode)."""
    for url in itertools.cycle(urls):
        with open(url, "rb") as stream:
            for member in wds.tariterators.tar_file_iterator(stream, skip_meta=None):
                yield member["data"]


READERS = {
    "tarfile": _tarfile_members,
    "webdataset": _webdataset_members,
    "gandist": lambda urls: (data for _, data in _members(urls)),
}


def bench_readers(specs: list[str], num_members: int = 20000, rounds: int = 3) -> list[dict]:
    """Print the CPU per tar member of three readers of the same local shards: Python's tarfile
    opening the file, WebDataset's iterator (tarfile on a stream, what `WebDataset` reads with)
    and `gandist.data.tar.tar_members` (the stream's). Best of `rounds`, taken in turn."""
    print(f"{'shards':<28} {'reader':<11} {'us/member':>9} {'x gandist':>9}")
    rows = []
    for spec in specs:
        urls = expand_shards(spec)
        times: dict[str, list[float]] = {name: [] for name in READERS}
        for _ in range(rounds):
            for name, members in READERS.items():
                start = time.process_time()
                for _ in itertools.islice(members(urls), num_members):
                    pass
                times[name].append((time.process_time() - start) / num_members * 1e6)
        best = {name: min(values) for name, values in times.items()}
        for name, us in best.items():
            rows.append({"reader": name, "us_per_member": us, "x_gandist": us / best["gandist"]})
            print(
                f"{spec[-28:]:<28} {name:<11} {us:>9.1f} {us / best['gandist']:>9.1f}", flush=True
            )
    print(f"(CPU time per member read, best of {rounds} rounds of {num_members} members)")
    return rows


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _child_pids() -> set[int]:
    """This process's children, from Linux /proc; none elsewhere."""
    tasks = Path(f"/proc/{os.getpid()}/task")
    if not tasks.is_dir():
        return set()
    pids = set()
    for task in tasks.iterdir():
        try:
            pids.update(int(pid) for pid in (task / "children").read_text().split())
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return pids


def plain_loop(urls: list[str], cfg: DataConfig, num_samples: int) -> tuple[float, float]:
    """(samples/s, CPU us per sample) of the simplest loop that reads the same tar members, with
    the same reader, and decodes them the same way (image -> tensor at the configured size,
    audio -> [1, L] tensor), in one process: what the stream costs on top is its own."""
    to_tensor = ImageTransform(cfg.resolution, cfg.channels)
    members = _media_members(urls)
    start, cpu_start = time.perf_counter(), time.process_time()
    for ext, data in itertools.islice(members, num_samples):
        if ext in IMAGE_KEYS:
            to_tensor(decode_image(data))
        else:
            load_clip(data, cfg.sample_rate, cfg.length)
    cpu_us = (time.process_time() - cpu_start) / num_samples * 1e6
    return num_samples / (time.perf_counter() - start), cpu_us


def pipeline_rate(cfg: DataConfig, batch_size: int, num_samples: int) -> tuple[float, float]:
    """(samples/s, CPU us per sample) through the full stream (read, shuffle, decode,
    transform, batch, hand-over) once warm; CPU counts the workers and the training process.

    The first batch of every worker is not timed: it pays for process start-up and imports.
    """
    others = _child_pids()
    loader = build_loader(cfg, batch_size=batch_size, rank=0, world_size=1, seed=0)
    batches = iter(loader)
    for _ in range(max(1, cfg.num_workers)):
        next(batches)
    workers = _child_pids() - others
    num_batches = max(1, num_samples // batch_size)
    cpu_start = time.process_time() + sum(_cpu_s(pid) for pid in workers)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(batches)
    rate = num_batches * batch_size / (time.perf_counter() - start)
    cpu_s = time.process_time() + sum(_cpu_s(pid) for pid in workers) - cpu_start
    del batches, loader  # stop the workers before the next round
    return rate, cpu_s / (num_batches * batch_size) * 1e6


def data_config(spec: str, num_workers: int) -> DataConfig:
    """A DataConfig for the shards, with kind, size and rate taken from their manifest."""
    urls = expand_shards(spec)
    manifest = read_manifest(urls[0]) or {}
    kind = manifest.get("kind", "image")
    return DataConfig(
        shards=spec,
        kind=kind,
        mode="resampled",  # any worker count on any number of shards
        num_workers=num_workers,
        shuffle_buffer=256,
        resolution=int(manifest.get("resolution", 32)),
        channels=int(manifest.get("channels", 3)),
        sample_rate=int(manifest.get("sample_rate", 16000)),
        length=int(manifest.get("length", 16384)),
    )


def _plain_in_child(urls: list[str], cfg: DataConfig, num_samples: int, results: Any) -> None:
    results.put(plain_loop(urls, cfg, num_samples))


def parallel_plain(urls: list[str], cfg: DataConfig, num_samples: int, count: int) -> float:
    """Summed samples/s of `count` plain loops run at once, one per process: what this machine
    gives `count` processes of the plain loop right now, the most `count` workers could give."""
    context = multiprocessing.get_context()
    results = context.Queue()
    processes = [
        context.Process(target=_plain_in_child, args=(urls, cfg, num_samples, results))
        for _ in range(count)
    ]
    for process in processes:
        process.start()
    rates = [results.get()[0] for _ in processes]
    for process in processes:
        process.join()
    return sum(rates)


def bench_data(
    specs: list[str],
    workers: list[int] | None = None,
    num_samples: int = 2048,
    batch_size: int = 32,
    rounds: int = 3,
) -> list[dict[str, Any]]:
    """Print and return samples/s of the stream for each worker count beside the plain loop.

    Each round times the plain loop and the stream back to back (in turn first), and the ratios
    are taken within a round: on a shared machine whose speed drifts from minute to minute, a
    pair measured together is slowed alike. Figures are medians over `rounds`; `range` is the
    lowest and highest per-worker ratio of a single round.

    With 2 or more workers each round also runs that many plain loops at once, in separate
    processes (`parallel_plain`): the stream against them is the pipeline's own cost, apart
    from what the machine loses when its cores work together (shared caches, memory bandwidth,
    the host's other guests).
    """
    workers = workers or sorted({0, 1, 2, os.cpu_count() or 1})  # 0: in the training process
    rows = []
    print(
        f"{'shards':<28} {'kind':<6} {'workers':>7} {'plain/s':>9} {'stream/s':>9} "
        f"{'stream/plain':>12} {'per worker':>10} {'range':>11} {'CPU eff':>8} "
        f"{'N plains/s':>10} {'stream/N plains':>15}"
    )
    for spec in specs:
        urls = expand_shards(spec)
        base = data_config(spec, 0)
        for count in workers:
            cfg = data_config(spec, count)
            timings: list[dict[str, Any]] = []
            for index in range(rounds):
                steps = {
                    "plain": functools.partial(plain_loop, urls, base, num_samples),
                    "stream": functools.partial(pipeline_rate, cfg, batch_size, num_samples),
                }
                if count >= 2:
                    steps["plains"] = functools.partial(
                        parallel_plain, urls, base, num_samples, count
                    )
                names = list(steps)
                names = names[index % len(names) :] + names[: index % len(names)]  # in turn first
                timings.append({name: steps[name]() for name in names})
            ratios = [t["stream"][0] / t["plain"][0] for t in timings]
            per_worker = [ratio / max(1, count) for ratio in ratios]
            row = {
                "kind": cfg.kind,
                "workers": count,
                "plain": statistics.median(t["plain"][0] for t in timings),
                "stream": statistics.median(t["stream"][0] for t in timings),
                "ratio": statistics.median(ratios),
                "per_worker": statistics.median(per_worker),
                "per_worker_range": (min(per_worker), max(per_worker)),
                "cpu_efficiency": statistics.median(
                    t["plain"][1] / t["stream"][1] for t in timings
                ),
            }
            plains = "-"
            if count >= 2:
                row["plains"] = statistics.median(t["plains"] for t in timings)
                row["vs_plains"] = statistics.median(t["stream"][0] / t["plains"] for t in timings)
                plains = f"{row['plains']:>10.0f} {row['vs_plains']:>15.2f}"
            rows.append(row)
            spread = f"{min(per_worker):.2f}-{max(per_worker):.2f}"
            print(
                f"{spec[-28:]:<28} {cfg.kind:<6} {count:>7} {row['plain']:>9.0f} "
                f"{row['stream']:>9.0f} {row['ratio']:>12.2f} {row['per_worker']:>10.2f} "
                f"{spread:>11} {row['cpu_efficiency']:>8.2f} {plains:>26}",
                flush=True,
            )
    print(
        f"({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; medians of {rounds} "
        "rounds, each timing the plain loop and the stream back to back; 'per worker' = "
        "stream/plain divided by workers, the goal is >= 0.8; 'CPU eff' = the plain loop's CPU "
        "time per sample over the stream's, workers and training process together; 'N plains' "
        "= as many plain loops as workers, run at once in separate processes)"
    )
    return rows


TRANSPORTS = ("pipe", "shared tensor", "slots")


class _FixedBatches(torch.utils.data.IterableDataset):
    """A worker's endless uint8 image batches of `nbytes`, handed over by `transport`: an array
    through the pipe, a fresh shared-memory tensor (torch's `default_collate`), or `BatchSlots`."""

    def __init__(self, nbytes: int, transport: str, slots: BatchSlots | None) -> None:
        super().__init__()
        self.nbytes, self.transport, self.slots = nbytes, transport, slots

    def __iter__(self) -> Iterator[dict[str, Any]]:
        source = [np.full((1, self.nbytes // 64), i, dtype=np.uint8) for i in range(64)]
        stack = self.slots.stacker() if self.slots else np.stack
        while True:
            if self.transport == "shared tensor":
                batch = torch.empty((64, 1, self.nbytes // 64), dtype=torch.uint8).share_memory_()
                np.stack(source, out=batch.numpy())
                yield {"image": batch}
            else:
                yield {"image": stack(source)}


def bench_transport(sizes_mb: list[float] | None = None, num_batches: int = 200) -> list[dict]:
    """Print the CPU cost of moving one batch of uint8 images from a DataLoader worker to the
    training process and scaling it there, by way of handing it over and batch size (Linux:
    reads /proc). The stream uses slots (`gandist.data.transport.BatchSlots`).
    """
    sizes_mb = sizes_mb or [0.1, 0.25, 0.5, 1, 2, 4, 8]
    print(
        f"{'batch MB':>8} {'transport':<13} {'ms/batch':>9} {'worker CPU ms':>13} {'main CPU ms':>11}"
    )
    rows = []
    for size in sizes_mb:
        nbytes = int(size * 1e6) // 64 * 64
        for transport in TRANSPORTS:
            slots = BatchSlots(1, 5, nbytes) if transport == "slots" else None
            loader = torch.utils.data.DataLoader(
                _FixedBatches(nbytes, transport, slots),
                batch_size=None,
                num_workers=1,
                prefetch_factor=4,
                persistent_workers=True,
                collate_fn=keep_batch,
            )
            receive = slots.to_torch if slots else to_torch_batch
            batches = iter(loader)
            receive(next(batches))
            (worker,) = [w.pid for w in batches._workers]
            worker_s, main_s, start = _cpu_s(worker), time.process_time(), time.perf_counter()
            for _ in range(num_batches):
                receive(next(batches))
            row = {
                "mb": size,
                "transport": transport,
                "ms": (time.perf_counter() - start) / num_batches * 1e3,
                "worker_ms": (_cpu_s(worker) - worker_s) / num_batches * 1e3,
                "main_ms": (time.process_time() - main_s) / num_batches * 1e3,
            }
            rows.append(row)
            print(
                f"{size:>8g} {row['transport']:<13} {row['ms']:>9.2f} {row['worker_ms']:>13.2f} "
                f"{row['main_ms']:>11.2f}",
                flush=True,
            )
            del batches, loader
    print(
        f"({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; main CPU includes "
        "scaling the batch to float, as in training)"
    )
    return rows
