"""The speed settings on CPU: torch.compile inside the Trainer (penalties kept eager, the G
phase's frozen D compiled), channels_last networks, the Adam kernel choice; checkpoints keep one
format throughout."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from gandist import checkpoint, rundir
from gandist.training.config import load_config
from gandist.training.performance import adam_options
from gandist.training.trainer import Trainer
from tests.conftest import ROOT, run, tiny_overrides


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def overrides(run_dir: Path, shards: Path, **extra: object) -> list[str]:
    # R1 every D step: its double backward runs on the eager local D in every phase.
    return tiny_overrides(
        run_dir,
        shards,
        **{"tracking.wandb": False, "reg.r1_gamma": 1.0, "reg.r1_every": 1, **extra},
    )


def saved_state(run_dir: Path) -> dict[str, torch.Tensor]:
    path = rundir.latest_checkpoint(run_dir)
    assert path is not None
    return torch.load(path / checkpoint.SHARED_FILE, weights_only=True)


def test_compiled_training_matches_eager_keeps_penalties_eager_saves_the_same_format_and_resumes(
    tmp_path: Path, glyph_shards: Path
) -> None:
    compiled = {"train.compile": True, "train.compile_backend": "aot_eager"}
    run_dir = tmp_path / "compiled"
    trainer = Trainer(load_config(None, overrides(run_dir, glyph_shards, **compiled)))
    # The DDP-level networks are compiled; the local modules penalties differentiate are not.
    for name in ("generator", "discriminator"):
        assert isinstance(
            trainer.algorithm.networks[name], torch._dynamo.eval_frame.OptimizedModule
        )
        assert not isinstance(
            trainer.algorithm.local(name), torch._dynamo.eval_frame.OptimizedModule
        )
    trainer.train()
    rows = rundir.read_metrics(run_dir)
    losses = [r[k] for r in rows for k in ("train/d_loss", "train/g_loss", "train/r1") if k in r]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    for row in rows:  # step time is the log window's images/s turned around; no CUDA memory
        assert row["perf/step_time_s"] == pytest.approx(8 / row["perf/images_per_s"], rel=1e-3)
        assert "perf/peak_memory_gib" not in row

    eager_dir = tmp_path / "eager"
    Trainer(load_config(None, overrides(eager_dir, glyph_shards))).train()
    compiled_state, eager_state = saved_state(run_dir), saved_state(eager_dir)
    assert sorted(compiled_state) == sorted(eager_state)
    for key in ("network/generator", "network/discriminator"):
        assert compiled_state[key].keys() == eager_state[key].keys()  # no `_orig_mod.` prefix
        assert not any("_orig_mod" in k or "module." in k for k in compiled_state[key])
        # The same training: 4 steps of D and G phases, compiled or not, agree within rounding.
        for name, tensor in compiled_state[key].items():
            torch.testing.assert_close(
                tensor, eager_state[key][name], rtol=1e-4, atol=1e-5, msg=f"{key}.{name}"
            )

    # Resumes (compiled again) and trains on from the saved step.
    resumed = Trainer(
        load_config(
            None,
            overrides(run_dir, glyph_shards, **compiled, **{"train.steps": 6, "resume": "latest"}),
        )
    )
    assert resumed.train().step == 6
    weights = saved_state(run_dir)["network/generator"]
    assert all(torch.isfinite(v).all() for v in weights.values())


def autograd_nodes(loss: torch.Tensor) -> set[str]:
    """The names of every node in `loss`'s backward graph."""
    names, seen, todo = set(), set(), [loss.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(node.name())
        todo.extend(child for child, _ in node.next_functions)
    return names


def test_the_g_phase_goes_through_a_compiled_frozen_discriminator(
    tmp_path: Path, glyph_shards: Path
) -> None:
    torch._dynamo.reset()  # no graph cached by an earlier test's networks of the same classes
    compiled = {"train.compile": True, "train.compile_backend": "aot_eager"}
    trainer = Trainer(load_config(None, overrides(tmp_path / "run", glyph_shards, **compiled)))
    algorithm = trainer.algorithm
    local_d = algorithm.local("discriminator")
    assert isinstance(algorithm.frozen_d, torch._dynamo.eval_frame.OptimizedModule)
    assert algorithm.frozen_d._orig_mod is local_d  # the same weights DDP trains in the D phase
    (g_phase,) = [p for p in algorithm.phases(0) if p.name == "g"]
    torch._dynamo.utils.counters.clear()
    with algorithm.trainable(g_phase):
        loss, _ = algorithm.loss(g_phase, None)
        nodes = autograd_nodes(loss)
        # G and D both ran as compiled graphs: no eager convolution or matmul is left to
        # differentiate (an eager D would add its ConvolutionBackward0 nodes).
        assert "CompiledFunctionBackward" in nodes
        assert not {n for n in nodes if n.startswith(("Convolution", "Addmm", "Mm"))}, nodes
        loss.backward()
    # One graph captured for G and one for the frozen D, neither split by a graph break.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2
    assert not torch._dynamo.utils.counters["graph_break"]
    # The frozen D's graph differentiated the images alone; G received its gradients.
    assert all(p.grad is None for p in local_d.parameters())
    assert all(p.grad is not None for p in algorithm.local("generator").parameters())


def test_channels_last_converts_the_convolutional_networks_and_trains_like_contiguous(
    tmp_path: Path, glyph_shards: Path
) -> None:
    steps = {"train.steps": 2, "train.checkpoint_every": 2}
    nhwc = Trainer(
        load_config(
            None, overrides(tmp_path / "nhwc", glyph_shards, **steps, **{"train.channels_last": 1})
        )
    )
    conv = next(p for p in nhwc.algorithm.local("discriminator").parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    nhwc.train()
    Trainer(load_config(None, overrides(tmp_path / "nchw", glyph_shards, **steps))).train()
    # The same maths in another memory layout: equal weights up to float rounding.
    a = saved_state(tmp_path / "nhwc")["network/discriminator"]
    b = saved_state(tmp_path / "nchw")["network/discriminator"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_adam_uses_foreach_on_cpu_and_the_trainer_builds_it_so(
    tmp_path: Path, glyph_shards: Path
) -> None:
    assert adam_options(torch.device("cpu")) == {"foreach": True}
    assert adam_options(torch.device("cuda")) == {"fused": True}
    trainer = Trainer(load_config(None, overrides(tmp_path / "run", glyph_shards)))
    for updater in trainer.updaters.values():
        assert updater.torch_optimizer.defaults["foreach"] is True


@pytest.mark.slow
@pytest.mark.dist
def test_two_gloo_ranks_train_compiled_ddp_to_identical_weights(
    tmp_path: Path, glyph_shards: Path
) -> None:
    """compile(DDP(module)) on 2 real ranks, with R1 on the eager local D every step."""
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    script = ROOT / "tests" / "scripts" / "train_and_dump_ranks.py"
    compiled = {"train.compile": True, "train.compile_backend": "aot_eager"}
    run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(dumps), *overrides(tmp_path / "run", glyph_shards, **compiled)]
    )  # fmt: skip
    ranks = [torch.load(dumps / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["step"] == 4
    for net in ("generator", "discriminator"):
        for name, tensor in ranks[0][net].items():
            if "running_" in name or "num_batches" in name:
                continue  # BN statistics are per rank by design
            assert torch.equal(tensor, ranks[1][net][name]), f"{net}.{name} differs across ranks"
    rows = rundir.read_metrics(tmp_path / "run")
    assert all(math.isfinite(r["train/r1"]) for r in rows) and len(rows) == 2
