"""Expected multi-GPU scaling on paper: gradient all-reduce volume and time against step time.

For each config, from the models' real parameter counts and FLOPs (counted on the CPU with
`torch.utils.flop_counter` through the algorithm's own phases, penalties included):

- the bytes DDP all-reduces per training step: n_critic D phases each send D's gradients,
  one G phase sends G's (fp32 gradients, 4 bytes per parameter, also under bf16 autocast).
  Lazy R1 and path length are added to their phase's loss, so they ride on that phase's
  single all-reduce and add no volume (StyleGAN2-ADA runs them as separate phases: +|D|/16
  and +|G|/4 per step there);
- the ring all-reduce time, t = 2 (N - 1) / N * bytes / bus_bandwidth + calls * latency, with
  NCCL's bus-bandwidth convention (what `all_reduce_perf` reports as busbw);
- the step time, from a measured images/s (`gandist bench gpu`'s, via --images-per-s) or an
  estimate: the step's FLOPs over an assumed sustained rate (--tflops);
- the efficiency this predicts at N GPUs with batch per GPU fixed (weak scaling): with no
  overlap t_step / (t_step + t_comm), and with DDP's overlap of all-reduce and backward
  t_step / max(t_step, t_comm).

    python -m gandist.bench.scaling configs/dcgan64.yaml configs/stylegan2.yaml \\
        --set data.resolution=64 --batch-per-gpu 256
"""

from __future__ import annotations

import argparse
import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from gandist.registry import ALGORITHMS
from gandist.training.algorithm import Runtime
from gandist.training.config import Config, load_config

GRAD_BYTES = 4  # fp32 gradients: DDP reduces in the parameters' dtype
DDP_BUCKET_BYTES = 25 * 2**20  # DDP's default bucket_cap_mb: one all-reduce call per bucket


@dataclass(frozen=True)
class Link:
    """An interconnect as NCCL's all_reduce_perf sees it: bus bandwidth and per-call latency."""

    name: str
    gpus: int  # ranks in the all-reduce
    bus_gb_per_s: float
    latency_us: float


# Assumptions (say so wherever the table is quoted; replace them with all_reduce_perf's busbw):
# H100 SXM within a node: NVLink 4 through NVSwitch, 450 GB/s per direction per GPU, about what
# NCCL reaches for large all-reduces, ~10 us per call. Across 2 nodes, InfiniBand NDR (400 Gb/s =
# 50 GB/s per NIC), ~25 us per call: with one NIC per GPU (rail-optimised, as DGX H100) the
# rings' inter-node hops share 8 NICs, taken as 350 GB/s bus bandwidth; with one NIC per node
# every ring crosses that one link, taken as 45 GB/s (90% of its line rate).
LINKS = (
    Link("NVLink, 2 GPUs", 2, 450.0, 10.0),
    Link("NVLink, 4 GPUs", 4, 450.0, 10.0),
    Link("NVLink, 8 GPUs", 8, 450.0, 10.0),
    Link("IB 8xNDR/node, 2x8 GPUs", 16, 350.0, 25.0),
    Link("IB 1xNDR/node, 2x8 GPUs", 16, 45.0, 25.0),
    Link("IB 1xNDR/node, 2x1 GPU", 2, 45.0, 25.0),
)


def ring_allreduce_s(num_bytes: float, world: int, bus_gb_per_s: float, latency_us: float) -> float:
    """Seconds for a ring all-reduce of `num_bytes` over `world` ranks (0 on one rank).

    Each rank sends and receives 2 (N - 1) / N of the buffer; NCCL's busbw is defined so that
    this volume over busbw is the time. Latency is paid once per call (DDP bucket)."""
    if world <= 1:
        return 0.0
    calls = max(1, math.ceil(num_bytes / DDP_BUCKET_BYTES))
    return 2 * (world - 1) / world * num_bytes / (bus_gb_per_s * 1e9) + calls * latency_us * 1e-6


@dataclass(frozen=True)
class StepVolume:
    """Gradient bytes all-reduced per training step, by phase."""

    d_bytes_per_phase: int
    g_bytes: int
    n_critic: int

    @property
    def total_bytes(self) -> int:
        return self.n_critic * self.d_bytes_per_phase + self.g_bytes

    def allreduce_s(self, link: Link) -> float:
        """Each phase is its own all-reduce (D's n_critic times, then G's), plus the finite
        guard's one-element all-reduce per update."""
        d = ring_allreduce_s(self.d_bytes_per_phase, link.gpus, link.bus_gb_per_s, link.latency_us)
        g = ring_allreduce_s(self.g_bytes, link.gpus, link.bus_gb_per_s, link.latency_us)
        guard = (self.n_critic + 1) * ring_allreduce_s(
            4, link.gpus, link.bus_gb_per_s, link.latency_us
        )
        return self.n_critic * d + g + guard


def step_volume(g_params: int, d_params: int, n_critic: int) -> StepVolume:
    return StepVolume(d_params * GRAD_BYTES, g_params * GRAD_BYTES, n_critic)


def efficiency(step_s: float, comm_s: float) -> tuple[float, float]:
    """(no overlap, full overlap) efficiency of N GPUs against one, batch per GPU fixed."""
    return step_s / (step_s + comm_s), step_s / max(step_s, comm_s)


@dataclass(frozen=True)
class ModelFacts:
    config: str
    g_params: int
    d_params: int
    n_critic: int
    flops_per_image: float  # one training step's FLOPs per real image, lazy penalties amortised


def _phase_flops(algorithm: Any, phase: Any, batch: dict[str, torch.Tensor]) -> float:
    with FlopCounterMode(display=False) as counter, algorithm.trainable(phase):
        loss, _ = algorithm.loss(phase, batch if phase.needs_real else None)
        loss.backward()
    for network in algorithm.networks.values():
        network.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def model_facts(cfg: Config, config_name: str, batch: int = 2) -> ModelFacts:
    """Parameter counts and per-image training FLOPs of `cfg`'s algorithm, counted on the CPU.

    FLOPs of one D phase with and without R1 and of the G phase with and without path length,
    each at `batch` images, amortised over r1_every / pl_every (convolutions and matmuls only:
    what FlopCounterMode counts, and what dominates)."""
    torch.manual_seed(0)
    algorithm = ALGORITHMS.get(cfg.train.algorithm)(cfg)
    algorithm.bind(
        Runtime(
            device=torch.device("cpu"),
            world_size=1,
            batch_per_rank=batch,
            autocast=contextlib.nullcontext,
            unwrap=lambda module: module,
            grad_scale=lambda name: 1.0,
        )
    )
    nets = algorithm.networks
    g_params = sum(p.numel() for p in nets["generator"].parameters())
    d_params = sum(p.numel() for p in nets["discriminator"].parameters())
    data = cfg.data
    real = {"image": torch.rand(batch, data.channels, data.resolution, data.resolution) * 2 - 1}
    if getattr(nets["generator"], "num_classes", 0):
        real["label"] = torch.zeros(batch, dtype=torch.long)
    reg = cfg.reg
    phases = {p.name: p for p in algorithm.phases(0)}  # step 0: every lazy penalty is due
    d_with, g_with = (
        _phase_flops(algorithm, phases["d"], real),
        _phase_flops(algorithm, phases["g"], real),
    )
    later = {p.name: p for p in algorithm.phases(1)}  # step 1: none is (every >= 2)
    d_without = _phase_flops(algorithm, later["d"], real) if reg.r1_every > 1 else d_with
    g_without = _phase_flops(algorithm, later["g"], real) if reg.pl_every > 1 else g_with
    d = d_without + (d_with - d_without) / reg.r1_every
    g = g_without + (g_with - g_without) / reg.pl_every
    n_critic = cfg.train.n_critic
    # One step: n_critic D phases on n_critic real batches, one G phase on one batch of fakes.
    return ModelFacts(
        config_name, g_params, d_params, n_critic, (n_critic * d + g) / (n_critic * batch)
    )


def scaling_rows(
    facts: ModelFacts,
    batch_per_gpu: int,
    step_s: float,
    links: tuple[Link, ...] = LINKS,
) -> list[dict[str, Any]]:
    """One row per link: volume, all-reduce time, its share of the step, predicted efficiency."""
    volume = step_volume(facts.g_params, facts.d_params, facts.n_critic)
    rows = []
    for link in links:
        comm_s = volume.allreduce_s(link)
        no_overlap, overlap = efficiency(step_s, comm_s)
        rows.append(
            {
                "config": facts.config,
                "link": link.name,
                "gpus": link.gpus,
                "mb_per_step": volume.total_bytes / 1e6,
                "allreduce_ms": comm_s * 1e3,
                "step_ms": step_s * 1e3,
                "efficiency_no_overlap": no_overlap,
                "efficiency_overlap": overlap,
                "images_per_s": link.gpus * batch_per_gpu * facts.n_critic / step_s * no_overlap,
            }
        )
    return rows


# Published reference: StyleGAN3's training speed at 1, 2, 4 and 8 GPUs with the global batch
# fixed at 32 (NVlabs/stylegan3, docs/configs.md, "Recommended configurations", the table the
# README's training section points to; s/kimg, 1 GPU with --batch-gpu=16 or 8 accumulation).
STYLEGAN3_S_PER_KIMG: dict[str, tuple[float, float, float, float]] = {
    "StyleGAN3-T 128px V100": (73.68, 37.30, 20.66, 11.31),
    "StyleGAN3-T 128px A100": (27.20, 13.74, 7.52, 4.40),
    "StyleGAN3-R 128px V100": (58.44, 29.92, 15.49, 8.43),
    "StyleGAN3-R 128px A100": (34.23, 17.29, 9.53, 5.69),
    "StyleGAN3-T 256px V100": (89.15, 45.45, 23.94, 13.04),
    "StyleGAN3-T 256px A100": (49.81, 25.05, 13.26, 7.32),
    "StyleGAN3-R 256px V100": (87.37, 44.12, 22.42, 11.88),
    "StyleGAN3-R 256px A100": (56.73, 28.60, 14.39, 8.03),
}


def published_efficiency(
    s_per_kimg: tuple[float, ...], gpus: tuple[int, ...] = (1, 2, 4, 8)
) -> list[float]:
    """Efficiency at each GPU count against one GPU: t_1 / (N * t_N)."""
    return [s_per_kimg[0] / (n * t) for n, t in zip(gpus, s_per_kimg, strict=True)]


def format_published() -> str:
    lines = [f"{'StyleGAN3 (published s/kimg)':<28} {'2 GPUs':>7} {'4 GPUs':>7} {'8 GPUs':>7}"]
    for name, times in STYLEGAN3_S_PER_KIMG.items():
        eff = published_efficiency(times)
        lines.append(f"{name:<28} {eff[1]:>7.3f} {eff[2]:>7.3f} {eff[3]:>7.3f}")
    return "\n".join(lines)


def format_table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'config':<24} {'link':<26} {'MB/step':>8} {'all-reduce ms':>13} {'step ms':>8} "
        f"{'eff. no overlap':>15} {'eff. overlap':>12}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['config']:<24} {r['link']:<26} {r['mb_per_step']:>8.1f} {r['allreduce_ms']:>13.3f} "
            f"{r['step_ms']:>8.1f} {r['efficiency_no_overlap']:>15.3f} {r['efficiency_overlap']:>12.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gandist.bench.scaling", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "configs", nargs="*", default=["configs/dcgan64.yaml", "configs/stylegan2.yaml"]
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=["data.resolution=64"],
        help="key=value overrides for every config",
    )
    parser.add_argument("--batch-per-gpu", type=int, default=256)
    parser.add_argument(
        "--tflops",
        type=float,
        default=200.0,
        help="assumed sustained TFLOP/s of one GPU for the step-time estimate",
    )
    parser.add_argument(
        "--images-per-s",
        type=float,
        nargs="*",
        default=None,
        help="measured one-GPU images/s per config (gandist bench gpu), instead of --tflops",
    )
    args = parser.parse_args(argv)
    if args.images_per_s and len(args.images_per_s) != len(args.configs):
        parser.error(
            f"--images-per-s needs one value per config ({len(args.configs)}), got {len(args.images_per_s)}"
        )
    rows = []
    for i, config in enumerate(args.configs):
        cfg = load_config(config, [*args.set, f"train.batch_size={args.batch_per_gpu}"])
        facts = model_facts(cfg, config)
        images = args.batch_per_gpu * facts.n_critic
        if args.images_per_s:
            step_s, source = (
                images / args.images_per_s[i],
                f"measured {args.images_per_s[i]:g} img/s",
            )
        else:
            step_s = images * facts.flops_per_image / (args.tflops * 1e12)
            source = f"{facts.flops_per_image / 1e9:.2f} GFLOP/image at an assumed {args.tflops:g} TFLOP/s"
        print(
            f"{config}: G {facts.g_params / 1e6:.2f}M, D {facts.d_params / 1e6:.2f}M parameters, "
            f"n_critic {facts.n_critic}; step of {images} images per GPU: {step_s * 1e3:.1f} ms ({source})"
        )
        rows += scaling_rows(facts, args.batch_per_gpu, step_s)
    print(format_table(rows))
    print(format_published())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
