"""The CUDA path: fp16 with one loss scaler per network, bf16, inductor compile, channels_last,
and a one-rank NCCL group. Skipped without CUDA; `bash launch/gpu_check.sh` runs them on a GPU."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from gandist import checkpoint, rundir
from gandist.training.config import load_config
from gandist.training.trainer import Trainer
from tests.conftest import ROOT, run, tiny_overrides

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA device (run `bash launch/gpu_check.sh` where a GPU is lent)",
    ),
]


def overrides(run_dir: Path, shards: Path, **extra: object) -> list[str]:
    return tiny_overrides(run_dir, shards, **{"tracking.wandb": False, **extra})


def conv_outputs(trainer: Trainer) -> list[torch.Tensor]:
    """Every 2-d convolution output of D during training (a forward hook on the local module)."""
    seen: list[torch.Tensor] = []
    for module in trainer.algorithm.local("discriminator").modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda m, i, out: seen.append(out.detach()))
    return seen


def finite_losses(run_dir: Path) -> list[float]:
    rows = rundir.read_metrics(run_dir)
    values = [r[k] for r in rows for k in ("train/d_loss", "train/g_loss")]
    assert all(0 < r["perf/peak_memory_gib"] < 80 for r in rows)
    assert values and all(math.isfinite(v) for v in values), values
    return values


def test_fp16_on_cuda_keeps_one_loss_scale_per_network_and_trains(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    trainer = Trainer(
        load_config(None, overrides(run_dir, glyph_shards, **{"train.mixed_precision": "fp16"}))
    )
    assert trainer.accelerator.device.type == "cuda"
    seen = conv_outputs(trainer)
    scalers = {name: u.scaler for name, u in trainer.updaters.items()}
    assert all(s is not None and s.is_enabled() for s in scalers.values())
    assert scalers["g"] is not scalers["d"]
    trainer.train()
    assert {t.dtype for t in seen} == {torch.float16}
    finite_losses(run_dir)
    state = torch.load(
        rundir.latest_checkpoint(run_dir) / checkpoint.SHARED_FILE, weights_only=True
    )
    assert {"scaler/g", "scaler/d"} <= set(state)


def test_bf16_on_cuda_runs_the_networks_in_bfloat16(tmp_path: Path, glyph_shards: Path) -> None:
    run_dir = tmp_path / "run"
    trainer = Trainer(
        load_config(None, overrides(run_dir, glyph_shards, **{"train.mixed_precision": "bf16"}))
    )
    seen = conv_outputs(trainer)
    trainer.train()
    assert {t.dtype for t in seen} == {torch.bfloat16}
    assert all(u.scaler is None for u in trainer.updaters.values())
    finite_losses(run_dir)


def test_inductor_compile_with_r1_and_channels_last_trains_in_bf16_and_resumes(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    fast = {
        "train.compile": True,
        "train.channels_last": True,
        "train.mixed_precision": "bf16",
        "reg.r1_gamma": 1.0,
        "reg.r1_every": 2,  # R1's double backward on the eager local D, every other step
    }
    trainer = Trainer(load_config(None, overrides(run_dir, glyph_shards, **fast)))
    seen = conv_outputs(trainer)  # the local D: the eager passes (G phase, R1)
    trainer.train()
    assert seen and all(t.is_contiguous(memory_format=torch.channels_last) for t in seen)
    assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32
    finite_losses(run_dir)
    resumed = Trainer(
        load_config(
            None, overrides(run_dir, glyph_shards, **fast, **{"train.steps": 6, "resume": "latest"})
        )
    )
    assert resumed.train().step == 6
    finite_losses(run_dir)


def test_fused_adam_steps_on_cuda(tmp_path: Path, glyph_shards: Path) -> None:
    trainer = Trainer(load_config(None, overrides(tmp_path / "run", glyph_shards)))
    for updater in trainer.updaters.values():
        assert updater.torch_optimizer.defaults["fused"] is True
    trainer.train()
    finite_losses(tmp_path / "run")


def test_one_rank_nccl_group_trains_through_torchrun(tmp_path: Path, glyph_shards: Path) -> None:
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    script = ROOT / "tests" / "scripts" / "train_and_dump_ranks.py"
    run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
         str(script), str(dumps), *overrides(tmp_path / "run", glyph_shards)]
    )  # fmt: skip
    rank0 = torch.load(dumps / "rank0.pt", weights_only=False)
    assert rank0["distributed_type"] == "DistributedType.MULTI_GPU"
    assert rank0["world_size"] == 1 and rank0["step"] == 4
    finite_losses(tmp_path / "run")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_cuda_stream_sends_pinned_uint8_and_scales_on_the_gpu_to_the_cpu_values(
    glyph_shards: Path, num_workers: int
) -> None:
    from gandist.data.config import DataConfig
    from gandist.data.loader import DataStream

    cfg = DataConfig(shards=str(glyph_shards), num_workers=num_workers, shuffle_buffer=16)
    common = {"batch_size": 8, "rank": 0, "world_size": 1, "seed": 3}
    on_cpu = DataStream(cfg, **common)
    on_gpu = DataStream(cfg, **common, device=torch.device("cuda"))
    for _ in range(5):
        expected, batch = on_cpu.next_batch(), on_gpu.next_batch()
        assert batch["image"].device.type == "cuda" and batch["image"].dtype == torch.float32
        assert torch.equal(batch["image"].cpu(), expected["image"])
        assert torch.equal(batch["label"].cpu(), expected["label"])
    assert on_gpu.state_dict() == on_cpu.state_dict()
