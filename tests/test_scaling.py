"""The arithmetic of `python -m gandist.bench.scaling`: all-reduce volume and time, efficiency,
and the parameter and FLOP counts it reads from the real models."""

from __future__ import annotations

import math

import pytest

from gandist.bench import scaling
from gandist.training.config import load_config


def test_ring_allreduce_time_is_twice_n_minus_one_over_n_of_the_bytes_over_bus_bandwidth() -> None:
    assert scaling.ring_allreduce_s(1e8, 1, 100.0, 10.0) == 0.0  # one rank sends nothing
    # 2 ranks: each sends half and receives half, twice: 1e8 bytes at 100 GB/s = 1 ms.
    assert scaling.ring_allreduce_s(1e8, 2, 100.0, 0.0) == pytest.approx(1e-3)
    # 8 ranks: 2 * 7/8 of the buffer; 1e8 bytes is 4 DDP buckets of 25 MiB, 4 latencies.
    assert scaling.ring_allreduce_s(1e8, 8, 100.0, 10.0) == pytest.approx(1.75e-3 + 4 * 10e-6)


def test_step_volume_sends_d_once_per_critic_phase_and_g_once() -> None:
    volume = scaling.step_volume(g_params=1_000_000, d_params=2_000_000, n_critic=5)
    assert volume.total_bytes == 5 * 2_000_000 * 4 + 1_000_000 * 4
    link = scaling.Link("test", 4, 100.0, 0.0)
    d = scaling.ring_allreduce_s(8e6, 4, 100.0, 0.0)
    g = scaling.ring_allreduce_s(4e6, 4, 100.0, 0.0)
    guard = scaling.ring_allreduce_s(4, 4, 100.0, 0.0)  # one flag per update
    assert volume.allreduce_s(link) == pytest.approx(5 * d + g + 6 * guard, rel=1e-12)


def test_efficiency_with_and_without_overlap() -> None:
    assert scaling.efficiency(step_s=3.0, comm_s=1.0) == pytest.approx((0.75, 1.0))
    assert scaling.efficiency(step_s=1.0, comm_s=2.0) == pytest.approx((1 / 3, 0.5))


def test_published_stylegan3_efficiency_is_one_gpu_time_over_n_times_n_gpu_time() -> None:
    eff = scaling.published_efficiency(scaling.STYLEGAN3_S_PER_KIMG["StyleGAN3-T 128px A100"])
    assert eff == pytest.approx([1.0, 27.20 / 27.48, 27.20 / 30.08, 27.20 / 35.20])


def test_model_facts_count_the_mlp_parameters_and_its_matmul_flops_exactly(tmp_path) -> None:
    cfg = load_config(
        "configs/mlp.yaml",
        [f"output_dir={tmp_path}", "model.latent_dim=8", "model.g_width=2", "model.d_width=2",
         "data.resolution=8", "data.channels=1"],
    )  # fmt: skip
    facts = scaling.model_facts(cfg, "mlp", batch=2)
    g_layers = [(8, 8), (8, 16), (16, 32), (32, 64)]  # (in, out): latent -> 4w, 8w, 16w -> 8*8
    d_layers = [(64, 32), (32, 16), (16, 8), (8, 1)]
    assert facts.g_params == sum(i * o + o for i, o in g_layers)
    assert facts.d_params == sum(i * o + o for i, o in d_layers)
    sum_g, sum_d = (sum(i * o for i, o in layers) for layers in (g_layers, d_layers))
    first_g, first_d = 8 * 8, 64 * 32
    # Per image, 2 FLOPs per multiply-add. D phase: G forward (no grad), D forward on real and
    # fake, D backward for both (weight grads; input grads except at the images' layer).
    # G phase: G and D forward, D input grads (all layers), G weight and input grads (except
    # at the latents' layer).
    d_phase = 2 * sum_g + 2 * (2 * sum_d) + 2 * (2 * sum_d + 2 * (sum_d - first_d))
    g_phase = 2 * sum_g + 2 * sum_d + 2 * sum_d + 2 * sum_g + 2 * (sum_g - first_g)
    assert facts.flops_per_image == d_phase + g_phase
    assert math.isfinite(facts.flops_per_image) and facts.n_critic == 1


def test_scaling_rows_predict_images_per_s_from_the_step_and_the_efficiency() -> None:
    facts = scaling.ModelFacts("x", g_params=10**6, d_params=10**6, n_critic=1, flops_per_image=1e9)
    link = scaling.Link("l", 8, 100.0, 0.0)
    (row,) = scaling.scaling_rows(facts, batch_per_gpu=256, step_s=0.01, links=(link,))
    comm = 2 * 7 / 8 * (8e6 + 2 * 4) / 1e11  # D's and G's gradients, and two guard flags
    assert row["allreduce_ms"] == pytest.approx(comm * 1e3)
    assert row["efficiency_no_overlap"] == pytest.approx(0.01 / (0.01 + comm))
    assert row["images_per_s"] == pytest.approx(8 * 256 / 0.01 * 0.01 / (0.01 + comm))
    assert row["mb_per_step"] == pytest.approx(8.0)
