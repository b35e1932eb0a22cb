"""`gandist bench fid`: time to score N samples, our sharded path on 1..K ranks vs torch-fidelity direct.

Both sides score the same generator with InceptionV3 (random weights: the same compute as the
real ones) against a reference of real samples that each side has cached beforehand, so the
timed part is generation, feature extraction and FID + KID + IS. Each measurement runs in a
fresh process; the figures are printed side by side with ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandist.data.config import DataConfig
from gandist.metrics.config import EvalConfig
from gandist.metrics.extractors import INCEPTION, write_random_inception_weights
from gandist.models.config import ModelConfig
from gandist.registry import MODELS

BENCH_MODEL = ModelConfig(name="dcgan", latent_dim=100, g_width=64, d_width=64)
RESOLUTION = 32


def _generator() -> nn.Module:
    torch.manual_seed(0)
    generator, _ = MODELS.get(BENCH_MODEL.name)(BENCH_MODEL, RESOLUTION, 3)
    return generator.eval()


def _eval_config(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(
        extractor=INCEPTION,
        weights_path=args.weights,
        num_samples=args.num,
        num_real=args.num_real,
        batch_size=args.batch_size,
        kid_subset_size=min(1000, args.num, args.num_real),
        cache_dir=str(Path(args.work) / "gandist_cache"),
    )


def worker_ours(args: argparse.Namespace) -> dict[str, Any]:
    """One rank of our path (under torchrun): reference from the cache, then timed scoring."""
    import torch.distributed as dist

    from gandist.metrics.evaluate import Evaluator

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
    evaluator = Evaluator(_eval_config(args), DataConfig(shards=args.shards, resolution=RESOLUTION))
    evaluator.prepare()
    generator = _generator()
    start = time.perf_counter()
    results = evaluator.evaluate(generator)
    score_s = time.perf_counter() - start
    world = dist.get_world_size() if dist.is_initialized() else 1
    return {
        "score_s": score_s,
        "world": world,
        "threads": torch.get_num_threads(),
        "cache_hit": evaluator.cache_hit,
        **results,
    }


def worker_torch_fidelity(args: argparse.Namespace) -> dict[str, Any]:
    """torch-fidelity's calculate_metrics in one process; its reference cache is warmed untimed."""
    from torch_fidelity import GenerativeModelModuleWrapper, calculate_metrics
    from torch_fidelity.metric_fid import fid_featuresdict_to_statistics_cached
    from torch_fidelity.utils import (
        create_feature_extractor,
        extract_featuresdict_from_input_id_cached,
        get_cacheable_input_name,
    )

    from gandist.metrics.sharded import Ranks, SampleFormat, real_samples, to_extractor_input

    _, images, _ = real_samples(
        args.shards,
        SampleFormat(resolution=RESOLUTION, channels=3),
        args.num_real,
        Ranks(0, 1, torch.device("cpu")),
    )
    reals = torch.stack(list(images))

    class Reals(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(reals)

        def __getitem__(self, index: int) -> torch.Tensor:
            return reals[index]

    class Uint8Generator(nn.Module):
        """torch-fidelity feeds generator outputs straight to the extractor, which wants uint8."""

        def __init__(self, generator: nn.Module) -> None:
            super().__init__()
            self.generator = generator

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return to_extractor_input(self.generator(z))

    kwargs = {
        "input2": Reals(),
        "input2_cache_name": f"gandist-bench-real-{args.num_real}",
        "cache_root": str(Path(args.work) / "torch_fidelity_cache"),
        "cuda": False,
        "batch_size": args.batch_size,
        "feature_extractor_weights_path": args.weights,
        "verbose": False,
        "save_cpu_ram": True,
    }
    warm = create_feature_extractor(INCEPTION, ["2048", "logits_unbiased"], **kwargs)
    features = extract_featuresdict_from_input_id_cached(2, warm, **kwargs)
    fid_featuresdict_to_statistics_cached(
        features, get_cacheable_input_name(2, **kwargs), warm, "2048", **kwargs
    )
    del warm
    model = GenerativeModelModuleWrapper(
        Uint8Generator(_generator()), BENCH_MODEL.latent_dim, "normal", 0
    )
    start = time.perf_counter()
    results = calculate_metrics(
        input1=model,
        input1_model_num_samples=args.num,
        fid=True,
        kid=True,
        isc=True,
        kid_subset_size=min(1000, args.num, args.num_real),
        **kwargs,
    )
    return {
        "score_s": time.perf_counter() - start,
        "world": 1,
        "threads": torch.get_num_threads(),
        "eval/fid": results["frechet_inception_distance"],
        "eval/kid": results["kernel_inception_distance_mean"],
        "eval/is": results["inception_score_mean"],
    }


def _run_worker(mode: str, ranks: int, args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.work) / f"{mode}-{ranks}.json"
    worker = [
        "-m", "gandist.bench.fid", mode, "--work", args.work, "--shards", args.shards,
        "--weights", args.weights, "--num-fake", str(args.num), "--num-real", str(args.num_real),
        "--batch-size", str(args.batch_size), "--out", str(out),
    ]  # fmt: skip
    if ranks > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", str(ranks), *worker]  # fmt: skip
    else:
        command = [sys.executable, *worker]
    env = dict(os.environ)
    env.pop("WORLD_SIZE", None)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    result = json.loads(out.read_text())
    result["process_s"] = time.perf_counter() - start
    return result


def bench_fid(num: int, num_real: int, ranks: list[int], batch_size: int = 64) -> list[dict]:
    """Print and return the timings of torch-fidelity direct and of our path on each rank count."""
    from gandist.data.shards import write_shards
    from gandist.data.synthetic import glyph_samples

    with tempfile.TemporaryDirectory(prefix="gandist-bench-fid-") as work:
        shards = Path(work) / "shards"
        write_shards(
            glyph_samples(num_real, size=RESOLUTION, seed=0), shards, "glyphs", max_count=256
        )
        weights = write_random_inception_weights(Path(work) / "inception-random.pth")
        args = argparse.Namespace(
            work=work, shards=str(shards), weights=str(weights), num=num, num_real=num_real,
            batch_size=batch_size,
        )  # fmt: skip
        print(
            f"gandist bench fid: scoring {num} generated samples (FID + KID + IS, InceptionV3 with "
            f"random weights) against {num_real} cached real samples; batch {batch_size} per rank, "
            f"{os.cpu_count()} CPU cores, {'CUDA' if torch.cuda.is_available() else 'CPU only'}",
            flush=True,
        )
        # Our reference cache, computed once untimed (as a training run does before its first step).
        warm = argparse.Namespace(**{**vars(args), "num": min(num, 16)})
        _run_worker("ours", 1, warm)
        print(
            f"{'path':34} {'ranks':>5} {'threads/rank':>12} {'score_s':>9} {'samples/s':>10} "
            f"{'speedup':>8} {'FID':>10}",
            flush=True,
        )
        runs = [("torch-fidelity", 1)] + [("ours", count) for count in ranks]
        rows: list[dict] = []
        for mode, count in runs:  # each row printed as it lands: a 10k run takes long on CPUs
            path = (
                "torch-fidelity calculate_metrics"
                if mode == "torch-fidelity"
                else "gandist sharded"
            )
            row = {"path": path, **_run_worker(mode, count, args)}
            rows.append(row)
            base = rows[0]["score_s"]
            print(
                f"{row['path']:34} {row['world']:>5} {row['threads']:>12} {row['score_s']:>9.1f} "
                f"{num / row['score_s']:>10.1f} {base / row['score_s']:>7.2f}x "
                f"{row['eval/fid']:>10.4g}",
                flush=True,
            )
    print(
        "speedup: torch-fidelity's time / this row's (>1 is faster). FIDs differ slightly: "
        "torch-fidelity draws its own latents."
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="worker of `gandist bench fid`")
    parser.add_argument("mode", choices=("ours", "torch-fidelity"))
    for name in ("--work", "--shards", "--weights", "--out"):
        parser.add_argument(name, required=True)
    # Not --num: torchrun would take it for an abbreviation of its own --numa-binding.
    parser.add_argument("--num-fake", dest="num", type=int, required=True)
    parser.add_argument("--num-real", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    args = parser.parse_args(argv)
    result = worker_ours(args) if args.mode == "ours" else worker_torch_fidelity(args)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
