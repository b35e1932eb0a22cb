"""Precision and recall beside FID/KID/IS: equal to torch-fidelity's own full computation on the
same features, 1 and 0 at the extremes, and the same on every rank when two gloo ranks share
the jobs."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch_fidelity.metric_fid import fid_features_to_statistics
from torch_fidelity.metric_prc import calculate_precision_recall_full

from gandist.metrics.sharded import Ranks, Reference, ScoreOptions, score

LAYERS = {"fid": "features", "kid": "features"}


def features(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = torch.Generator().manual_seed(seed)
    fake = torch.randn(300, 8, generator=rng) * 1.3 + 0.4  # overlaps the reals, wider
    real = torch.randn(400, 8, generator=rng)
    return fake.double(), real.double()


def scored(fake: torch.Tensor, real: torch.Tensor, ranks: Ranks, prc: bool = True) -> dict:
    reference = Reference(fid_features_to_statistics(real), real, len(real), {})
    options = ScoreOptions(kid_subset_size=100, kid_subsets=5, prc=prc)
    return score({"features": fake}, reference, LAYERS, ranks, options)


def test_precision_and_recall_equal_torch_fidelity_on_the_same_features() -> None:
    fake, real = features(0)
    results = scored(fake, real, Ranks(0, 1, torch.device("cpu")))
    precision, recall = calculate_precision_recall_full(fake, real, neighborhood=3)
    assert 0.05 < precision < 0.95 and 0.05 < recall < 0.95  # not a degenerate case
    assert results["eval/precision"] == pytest.approx(precision, abs=1e-12)
    assert results["eval/recall"] == pytest.approx(recall, abs=1e-12)
    f_score = 2 * precision * recall / (precision + recall)
    assert results["eval/f_score"] == pytest.approx(f_score)
    assert "eval/fid" in results and "eval/kid" in results


def test_precision_recall_extremes_and_off_by_default() -> None:
    ranks = Ranks(0, 1, torch.device("cpu"))
    _, real = features(1)
    same = scored(real.clone(), real, ranks)
    assert same["eval/precision"] == 1.0 and same["eval/recall"] == 1.0
    far = scored(real + 100.0, real, ranks)
    assert far["eval/precision"] == 0.0 and far["eval/recall"] == 0.0
    assert "eval/precision" not in scored(real, real, ranks, prc=False)


def _rank_scores(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    fake, real = features(0)
    torch.save(scored(fake, real, Ranks.current()), f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_gloo_ranks_share_the_jobs_and_agree(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(_rank_scores, args=(port, str(tmp_path)), nprocs=2, start_method="fork")
    both = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert both[0] == both[1]
    fake, real = features(0)
    precision, recall = calculate_precision_recall_full(fake, real, neighborhood=3)
    assert both[0]["eval/precision"] == pytest.approx(precision, abs=1e-12)
    assert both[0]["eval/recall"] == pytest.approx(recall, abs=1e-12)
