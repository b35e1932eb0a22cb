"""Sharded scoring: each rank extracts features of its share, all ranks gather, torch-fidelity scores.

Samples are images or audio clips (`SampleFormat`). Sample `i` (generated or real) belongs to
rank `i % world`; gathered features are put back in
index order, so the numbers are those of torch-fidelity in one process on the same samples,
whatever the number of ranks. FID, KID and IS are then computed by torch-fidelity's own
statistics functions, each on a different rank, and the results are shared.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch_fidelity
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from gandist.data.config import DataConfig
from gandist.data.decode import ToExample, media_transform
from gandist.data.health import BadSample, SkipCounter
from gandist.data.limits import MAX_IMAGE_PIXELS
from gandist.data.shards import expand_shards, shard_identities
from gandist.data.stream import ReadLimits, read_shard
from gandist.data.tar import MAX_MEMBER_BYTES
from gandist.models import generate

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: safetensors (1 was a pickle)
CACHE_SUFFIX = ".safetensors"


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks, and the device its collectives run on."""

    rank: int
    world: int
    device: torch.device

    @classmethod
    def current(cls, device: torch.device | str = "cpu") -> Ranks:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), torch.device(device))
        return cls(0, 1, torch.device(device))

    def mine(self, num: int) -> torch.Tensor:
        """Indices of the samples this rank handles: rank, rank + world, ... below num."""
        return torch.arange(self.rank, num, self.world)

    def all_gather_object(self, value: Any) -> list[Any]:
        if self.world == 1:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out


def gather_in_order(
    ranks: Ranks, indices: torch.Tensor, features: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Every rank's (index [n], features {name: [n, D]}) -> all features [N, D] sorted by index, on CPU.

    Ranks may hold different counts (a skipped corrupt sample, N not divisible by the ranks):
    each pads to the largest count with index -1, and padding is dropped after the gather.
    """
    if ranks.world == 1:
        order = torch.argsort(indices)
        return {k: v[order].cpu() for k, v in features.items()}
    counts = ranks.all_gather_object(int(indices.numel()))
    size = max(counts)
    padded_index = torch.full((size,), -1, dtype=torch.int64, device=ranks.device)
    padded_index[: indices.numel()] = indices.to(ranks.device)
    gathered_index = [torch.empty_like(padded_index) for _ in range(ranks.world)]
    dist.all_gather(gathered_index, padded_index)
    index = torch.cat(gathered_index).cpu()
    keep = index >= 0
    order = torch.argsort(index[keep])
    out = {}
    for name in sorted(features):
        local = features[name].to(ranks.device, torch.float32)
        padded = local.new_zeros((size, *local.shape[1:]))
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(ranks.world)]
        dist.all_gather(parts, padded)
        out[name] = torch.cat(parts).cpu()[keep][order]
    return out


def to_extractor_input(samples: torch.Tensor) -> torch.Tensor:
    """Samples in [-1, 1] -> what extractors take: images [B, C, H, W] -> uint8 [B, 3, H, W]
    (torch-fidelity's input convention); audio [B, 1, L] -> float32 [B, 1, L] clipped to [-1, 1].

    Quantising images to 8 bits is what saving samples as PNG and scoring them would do;
    grayscale is repeated to 3 channels because InceptionV3 (and most extractors) expect RGB.
    Audio stays float: an audio extractor's front end takes waveforms as they are played.
    """
    if samples.dim() == 3:
        return samples.float().clamp(-1.0, 1.0)
    x = samples.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@dataclass(frozen=True)
class SampleFormat:
    """What one sample is: an image (resolution, channels) or an audio clip (sample rate, length),
    and what reading and decoding one may cost (the run's `data.*` caps and read timeouts, so
    evaluation accepts what training accepts)."""

    kind: str = "image"
    resolution: int = 32
    channels: int = 3
    sample_rate: int = 16000
    length: int = 16384
    limits: ReadLimits = ReadLimits()
    max_image_pixels: int = MAX_IMAGE_PIXELS

    @classmethod
    def of(cls, data: DataConfig) -> SampleFormat:
        return cls(
            data.kind,
            data.resolution,
            data.channels,
            data.sample_rate,
            data.length,
            limits=ReadLimits.of(data),
            max_image_pixels=data.max_image_pixels,
        )

    def key(self) -> dict[str, Any]:
        """What reference statistics depend on: the image size, or the audio rate and length,
        and the caps where they are not the defaults (a cap decides which samples count)."""
        caps = {
            name: value
            for name, value, default in (
                ("max_member_bytes", self.limits.max_member_bytes, MAX_MEMBER_BYTES),
                ("max_image_pixels", self.max_image_pixels, MAX_IMAGE_PIXELS),
            )
            if value != default and (self.kind == "image" or name != "max_image_pixels")
        }
        if self.kind == "image":
            return {
                "kind": "image",
                "resolution": self.resolution,
                "channels": self.channels,
                **caps,
            }
        return {"kind": "audio", "sample_rate": self.sample_rate, "length": self.length, **caps}

    @functools.cached_property
    def _decoder(self) -> ToExample:
        transform = media_transform(
            self.kind,
            resolution=self.resolution,
            channels=self.channels,
            sample_rate=self.sample_rate,
            length=self.length,
        )
        return ToExample(transform, self.kind, self.max_image_pixels)

    def decode(self, sample: dict[str, Any]) -> torch.Tensor:
        """A raw sample (tar members by extension) -> extractor input for one sample: uint8
        [3, R, R] or float [1, L]. Raises BadSample naming the shard and key when it can't.

        Images stay the uint8 they decode to, exactly what `to_extractor_input` gives for the
        same image scaled to [-1, 1]; grayscale is repeated to 3 channels as there.
        """
        array = self._decoder.decode(sample)  # may be a read-only view of the decoded buffer
        value = torch.from_numpy(np.require(array, requirements=("C", "W")))
        if self.kind == "image" and value.shape[0] == 1:
            return value.expand(3, -1, -1)
        return value


@torch.no_grad()
def extract(
    extractor: nn.Module, batches: Iterable[torch.Tensor], device: torch.device
) -> dict[str, torch.Tensor]:
    """Features {layer: [N, D]} (CPU) of uint8 batches, as torch-fidelity's own loops compute them."""
    out: dict[str, list[torch.Tensor]] = {name: [] for name in extractor.features_list}
    for batch in batches:
        named = extractor.convert_features_tuple_to_dict(extractor(batch.to(device)))
        for name, value in named.items():
            out[name].append(value.cpu())
    return {name: torch.cat(parts) if parts else torch.empty(0, 0) for name, parts in out.items()}


def evaluation_latents(
    num: int, latent_dim: int, num_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The same latents [num, latent_dim] (and labels [num]) for every evaluation and rank count."""
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(num, latent_dim, generator=generator)
    labels = torch.randint(num_classes, (num,), generator=generator) if num_classes else None
    return latents, labels


@torch.no_grad()
def generated_features(
    generator: nn.Module,
    extractor: nn.Module,
    ranks: Ranks,
    *,
    num: int,
    latent_dim: int,
    batch_size: int,
    seed: int,
    num_classes: int = 0,
    truncation: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Features of `num` samples of `generator`, generated and extracted `1/world` per rank, gathered.

    With `truncation` < 1, latent truncation is applied to all `num` latents at once (so no
    two batches share resampled values); style-based generators truncate in w per batch.
    """
    from gandist.models.truncation import is_style_based, truncate_latents

    latents, labels = evaluation_latents(num, latent_dim, num_classes, seed)
    if truncation < 1.0 and not (is_style_based(generator) and labels is None):
        latents, truncation = truncate_latents(latents, truncation, seed), 1.0
    mine = ranks.mine(num)

    def batches() -> Iterator[torch.Tensor]:
        for index in mine.split(batch_size):
            z = latents[index].to(ranks.device)
            y = labels[index].to(ranks.device) if labels is not None else None
            yield to_extractor_input(generate(generator, z, y, truncation))

    return gather_in_order(ranks, mine, extract(extractor, batches(), ranks.device))


def real_samples(
    shards: str, fmt: SampleFormat, num: int, ranks: Ranks
) -> tuple[list[int], Iterator[torch.Tensor], SkipCounter]:
    """This rank's share of the first `num` samples of the sorted shards, as extractor input
    (uint8 [3, R, R] images or float [1, L] clips).

    Every rank walks the same tar members in order (reading bytes is cheap) and decodes only
    its own, so the reference set does not depend on the number of ranks.
    Returns (indices, filled as the samples are drawn; the sample iterator; the skip counter).
    """
    handler = SkipCounter()
    urls = expand_shards(shards)
    raw = itertools.chain.from_iterable(read_shard(url, handler, fmt.limits) for url in urls)
    indices: list[int] = []

    def decoded() -> Iterator[torch.Tensor]:
        for index, sample in enumerate(itertools.islice(raw, num)):
            if index % ranks.world != ranks.rank:
                continue
            try:
                value = fmt.decode(sample)
            except BadSample as err:
                handler(err)
                continue
            indices.append(index)
            yield value

    return indices, decoded(), handler


def batched(items: Iterator[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    while chunk := list(itertools.islice(items, batch_size)):
        yield torch.stack(chunk)


def real_features(
    shards: str,
    extractor: nn.Module,
    ranks: Ranks,
    *,
    fmt: SampleFormat,
    num: int,
    batch_size: int,
) -> dict[str, torch.Tensor]:
    """Features of the first `num` real samples, extracted `1/world` per rank and gathered in order."""
    indices, samples, handler = real_samples(shards, fmt, num, ranks)
    features = extract(extractor, batched(samples, batch_size), ranks.device)
    if handler.count:
        log.warning(
            "reference statistics: skipped %d bad samples on rank %d", handler.count, ranks.rank
        )
    return gather_in_order(ranks, torch.tensor(indices, dtype=torch.int64), features)


# ---- reference statistics, cached on disk ------------------------------------------------


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gandist" / "metrics"


def reference_key(
    shards: str,
    *,
    extractor: str,
    weights_digest: str | None,
    layers: dict[str, str],
    fmt: SampleFormat,
    num: int,
) -> tuple[str, dict[str, Any]]:
    """A digest of everything the reference statistics depend on, and the description hashed.

    Local shards count by path, size and modification time: rewriting them invalidates the
    cache. Remote shards count by their URL with credentials redacted, plus size, ETag and
    Last-Modified where a HEAD request tells them (http(s)); see `shard_identities`.
    Images key on resolution and channels, audio on sample rate and clip length.
    """
    shard_ids = shard_identities(expand_shards(shards))
    description = {
        "format": CACHE_FORMAT,
        "shards": shard_ids,
        "extractor": extractor,
        "weights": weights_digest,
        "layers": layers,
        **fmt.key(),
        "num_real": num,
        "torch_fidelity": torch_fidelity.__version__,
    }
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:20]
    return digest, description


@dataclass
class Reference:
    """What the metrics need of the real data: FID statistics, KID features, and provenance."""

    fid_stats: dict[str, Any]
    kid_features: torch.Tensor  # [N, D]
    num: int
    description: dict[str, Any]


def reference_statistics(
    compute_features: Callable[[], dict[str, torch.Tensor]],
    layers: dict[str, str],
    ranks: Ranks,
    cache_path: Path,
    description: dict[str, Any],
) -> tuple[Reference, bool]:
    """Load the reference from `cache_path`, or compute it on every rank and cache it (rank 0).

    All ranks must agree on a hit, since a miss runs collectives: a hit counts only when every
    rank can read the file (nodes without a shared file system simply recompute).
    Returns (reference, hit).
    """
    local = _load_reference(cache_path, description)
    hit = all(ranks.all_gather_object(local is not None))
    if hit:
        return local, True
    features = compute_features()
    reference = Reference(
        fid_stats=fid_features_to_statistics(features[layers["fid"]]),
        kid_features=features[layers["kid"]],
        num=int(features[layers["fid"]].shape[0]),
        description=description,
    )
    if ranks.rank == 0:
        _save_reference(cache_path, reference)
    return reference, False


def _save_reference(path: Path, reference: Reference) -> None:
    """Write the reference as safetensors (tensors and a JSON description; no pickle, so a
    cache file can hold no code), through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "fid_mu": torch.from_numpy(np.ascontiguousarray(reference.fid_stats["mu"])),
        "fid_sigma": torch.from_numpy(np.ascontiguousarray(reference.fid_stats["sigma"])),
        "kid_features": reference.kid_features.contiguous(),
    }
    metadata = {"description": json.dumps(reference.description), "num": str(reference.num)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_reference(path: Path, description: dict[str, Any]) -> Reference | None:
    """The cached reference at `path` when its description matches, else None. Only
    safetensors are read: a file that is anything else (a pickle included) is ignored, and
    recomputed over, without being executed."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as cached:
            metadata = cached.metadata() or {}
            if json.loads(metadata.get("description", "null")) != json.loads(
                json.dumps(description)
            ):
                return None
            tensors = {name: cached.get_tensor(name) for name in cached.keys()}  # noqa: SIM118
        fid_stats = {"mu": tensors["fid_mu"].numpy(), "sigma": tensors["fid_sigma"].numpy()}
        return Reference(fid_stats, tensors["kid_features"], int(metadata["num"]), description)
    except Exception as err:  # noqa: BLE001 - a damaged or foreign cache entry is recomputed
        log.warning("ignoring unreadable reference cache %s: %s", path, err)
        return None


# ---- scoring with torch-fidelity's statistics functions ----------------------------------


@dataclass(frozen=True)
class ScoreOptions:
    """torch-fidelity's metric options, named as in its `calculate_metrics`."""

    kid_subsets: int = 100
    kid_subset_size: int = 1000
    isc_splits: int = 10
    rng_seed: int = 2020
    prc: bool = False
    prc_neighborhood: int = 3


def score(
    fake: dict[str, torch.Tensor],
    reference: Reference,
    layers: dict[str, str],
    ranks: Ranks,
    options: ScoreOptions = ScoreOptions(),
) -> dict[str, float]:
    """FID, KID and IS (when the extractor has logits) of generated features against the reference.

    Each metric is computed by torch-fidelity's function on its own rank (FID on rank 0, KID on
    rank 1, IS on rank 2, modulo the world size), so no rank waits for all three serially.
    Keys: eval/fid, eval/kid, eval/kid_std, eval/is, eval/is_std, and with `options.prc`
    eval/precision, eval/recall, eval/f_score (Kynkaanniemi et al., 2019) on a fourth rank.
    """
    subset = min(options.kid_subset_size, len(fake[layers["kid"]]), len(reference.kid_features))
    if subset < options.kid_subset_size and ranks.rank == 0:
        log.info(
            "KID subset size lowered to %d: fewer samples than %d", subset, options.kid_subset_size
        )

    def fid() -> dict[str, float]:
        stats = fid_features_to_statistics(fake[layers["fid"]])
        value = fid_statistics_to_metric(stats, reference.fid_stats, verbose=False)
        return {"eval/fid": value["frechet_inception_distance"]}

    def kid() -> dict[str, float]:
        value = kid_features_to_metric(
            fake[layers["kid"]],
            reference.kid_features,
            kid_subsets=options.kid_subsets,
            kid_subset_size=subset,
            rng_seed=options.rng_seed,
            verbose=False,
        )
        return {
            "eval/kid": value["kernel_inception_distance_mean"],
            "eval/kid_std": value["kernel_inception_distance_std"],
        }

    def isc() -> dict[str, float]:
        value = isc_features_to_metric(
            fake[layers["isc"]],
            splits=min(options.isc_splits, len(fake[layers["isc"]])),  # no empty splits
            shuffle=True,
            rng_seed=options.rng_seed,
        )
        return {
            "eval/is": value["inception_score_mean"],
            "eval/is_std": value["inception_score_std"],
        }

    def prc() -> dict[str, float]:
        # torch-fidelity's precision/recall layer is the KID one for every extractor here, so
        # the reference's KID features are the real features; generated first, real second.
        value = prc_features_to_metric(
            fake[layers["kid"]],
            reference.kid_features,
            prc_neighborhood=options.prc_neighborhood,
            prc_batch_size=10000,
            save_cpu_ram=True,  # distances in blocks: never an N x N matrix in memory
            verbose=False,
        )
        return {f"eval/{key}": value[key] for key in ("precision", "recall", "f_score")}

    jobs = [fid, kid] + ([isc] if "isc" in layers else []) + ([prc] if options.prc else [])
    mine: dict[str, float] = {}
    for position, job in enumerate(jobs):
        if position % ranks.world == ranks.rank:
            mine |= job()
    results: dict[str, float] = {}
    for part in ranks.all_gather_object(mine):
        results |= part
    return results
