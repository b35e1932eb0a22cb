"""Run under torchrun with 2 gloo ranks: sharded scores, then a second Evaluator that must hit the cache.

Usage: metrics_two_ranks.py SHARDS EXTRACTOR CACHE_DIR OUT_JSON NUM_FAKE NUM_REAL
           [AUDIO_SHARDS AUDIO_EXTRACTOR]

With audio shards and an audio extractor it also scores a stand-in audio generator against
them in the same launch (starting a process group costs more than the scoring).
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

from gandist.data.config import DataConfig
from gandist.metrics.config import EvalConfig
from gandist.metrics.evaluate import Evaluator
from gandist.models.config import ModelConfig
from gandist.registry import MODELS

TINY_MODEL = ModelConfig(name="dcgan", latent_dim=16, g_width=8, d_width=8)


def tiny_generator() -> torch.nn.Module:
    torch.manual_seed(0)
    generator, _ = MODELS.get("dcgan")(TINY_MODEL, 32, 3)
    return generator


class TinyAudioGenerator(torch.nn.Module):
    """A stand-in audio generator (no audio GAN family exists): latents [B, 16] -> [B, 1, L]."""

    latent_dim = 16

    def __init__(self, length: int) -> None:
        super().__init__()
        self.length = length
        self.net = torch.nn.Linear(self.latent_dim, 256)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        coarse = self.net(latents)[:, None]  # [B, 1, 256]
        return torch.tanh(F.interpolate(coarse, size=self.length, mode="linear"))


def tiny_audio_generator(length: int = 16384) -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyAudioGenerator(length)


def eval_config(extractor: str, cache_dir: str, num_fake: int, num_real: int) -> EvalConfig:
    return EvalConfig(
        extractor="gandist-domain",
        weights_path=extractor,
        num_samples=num_fake,
        num_real=num_real,
        batch_size=16,
        kid_subsets=20,
        kid_subset_size=40,
        isc_splits=4,
        cache_dir=cache_dir,
    )


def main() -> None:
    shards, extractor, cache_dir, out = sys.argv[1:5]
    num_fake, num_real = int(sys.argv[5]), int(sys.argv[6])
    dist.init_process_group("gloo")
    cfg = eval_config(extractor, cache_dir, num_fake, num_real)
    data = DataConfig(shards=shards, resolution=32, channels=3)
    first = Evaluator(cfg, data)
    results = first.evaluate(tiny_generator())
    second = Evaluator(cfg, data)
    second.prepare()
    report = {
        "world": dist.get_world_size(),
        "results": results,
        "first_hit": first.cache_hit,
        "second_hit_per_rank": first.ranks.all_gather_object(second.cache_hit),
        "num_real": first.reference.num,
        "results_per_rank": first.ranks.all_gather_object(results["eval/fid"]),
    }
    if len(sys.argv) > 7:
        tones, audio_extractor = sys.argv[7:9]
        audio_cfg = eval_config(audio_extractor, cache_dir, num_fake, num_real)
        audio = Evaluator(audio_cfg, DataConfig(shards=tones, kind="audio"))
        report["audio_results"] = audio.evaluate(tiny_audio_generator())
        report["audio_num_real"] = audio.reference.num
        report["audio_cache_key"] = audio.cache_path()[1]
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump(report, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
