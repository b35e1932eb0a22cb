"""Two real gloo ranks on CPU, started the way users start them: torchrun and accelerate launch."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from tests import wandb_log
from tests.conftest import gandist_cli, run, tiny_overrides

pytestmark = pytest.mark.dist

SCRIPT = Path(__file__).parent / "scripts" / "train_and_dump_ranks.py"


def test_torchrun_two_ranks_train_one_model_and_write_the_run(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir, dumps = tmp_path / "run", tmp_path / "dumps"
    dumps.mkdir()
    overrides = tiny_overrides(run_dir, glyph_shards, **{"data.num_workers": 2, "train.steps": 6})
    run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(SCRIPT), str(dumps), *overrides]
    )  # fmt: skip
    ranks = [torch.load(dumps / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert all(r["distributed_type"] == "DistributedType.MULTI_CPU" for r in ranks)
    for net in ("generator", "discriminator"):
        for name, tensor in ranks[0][net].items():
            if "running_" in name or "num_batches" in name:
                continue  # BN statistics are per rank by design; parameters must match exactly
            assert torch.equal(tensor, ranks[1][net][name]), f"{net}.{name} differs across ranks"

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert all(math.isfinite(r["train/d_loss"]) and math.isfinite(r["train/g_loss"]) for r in rows)
    assert rows[-1]["train/images_seen"] == 6 * 8
    assert json.loads((run_dir / "run.json").read_text())["world_size"] == 2
    assert (run_dir / "samples" / "step-00000006.png").is_file()
    final = run_dir / "checkpoints" / "step-00000006"
    assert {"COMPLETE", "state.pt", "rank-00000.pt", "rank-00001.pt"} <= {
        p.name for p in final.iterdir()
    }
    assert wandb_log.run_file(run_dir).stat().st_size > 0


def test_gandist_train_launches_two_ranks_and_resumes_them(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, glyph_shards, **{"data.num_workers": 2})
    gandist_cli("train", "configs/dcgan.yaml", "--num-processes", "2", *overrides)
    gandist_cli(
        "train",
        "configs/dcgan.yaml",
        "--num-processes",
        "2",
        *overrides,
        "train.steps=8",
        "resume=latest",
    )
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6, 8]
    assert rows[-1]["train/images_seen"] == 8 * 8
    info = json.loads((run_dir / "run.json").read_text())
    assert (info["world_size"], info["resumed_at_step"]) == (2, 4)
    # Both ranks' stream positions travel with the checkpoint, each in its rank's file.
    final = run_dir / "checkpoints" / "step-00000008"
    states = [torch.load(final / f"rank-{r:05d}.pt", weights_only=True) for r in (0, 1)]
    assert [state["data"]["position"][0] for state in states] == [8, 8]
    assert [state["data"]["rank"] for state in states] == [0, 1]
