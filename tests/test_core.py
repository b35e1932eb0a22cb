"""The training core: phases freeze what they do not train, updaters guard against non-finite
values, checkpoints load no code and name what differs, resumes apply the config, rollback."""

from __future__ import annotations

import json
import logging
import math
import pickle
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState

from gandist import checkpoint, rundir
from gandist.errors import ConfigError
from gandist.training.algorithm import Phase
from gandist.training.config import load_config
from gandist.training.trainer import Trainer
from gandist.training.updater import NonFiniteTrainingError
from tests.conftest import run, tiny_overrides

MARKER_ENV = "GANDIST_TEST_PWNED"


def overrides(run_dir: Path, shards: Path, **extra: object) -> list[str]:
    return tiny_overrides(run_dir, shards, **{"tracking.wandb": False, **extra})


def test_each_phase_trains_only_its_networks(tmp_path: Path, glyph_shards: Path) -> None:
    trainer = Trainer(load_config(None, overrides(tmp_path / "run", glyph_shards)))
    algorithm = trainer.algorithm
    seen: dict[str, dict[str, bool]] = {}
    loss = algorithm.loss

    def record(phase: Phase, batch: object) -> object:
        seen[phase.name] = {
            name: all(p.requires_grad for p in net.parameters())
            for name, net in algorithm.networks.items()
        }
        return loss(phase, batch)

    algorithm.loss = record  # type: ignore[method-assign]
    for phase in algorithm.phases(0):
        trainer.run_phase(phase)
        other = "generator" if phase.name == "d" else "discriminator"
        # The frozen network got no gradient at all from this phase's backward.
        assert all(p.grad is None for p in algorithm.networks[other].parameters()), phase.name
        for updater in trainer.updaters.values():
            updater.optimizer.zero_grad(set_to_none=True)
    assert seen == {
        "d": {"generator": False, "discriminator": True},
        "g": {"generator": True, "discriminator": False},
    }
    # Afterwards every network trains again.
    assert all(p.requires_grad for net in algorithm.networks.values() for p in net.parameters())


def test_a_nonfinite_loss_skips_the_update_counts_it_and_stops_after_max_bad_steps(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    cfg = load_config(None, overrides(run_dir, glyph_shards, **{"train.steps": 2}))
    Trainer(cfg).train()  # a good checkpoint at step 2
    good = rundir.latest_checkpoint(run_dir)

    cfg = load_config(
        None,
        overrides(
            run_dir,
            glyph_shards,
            **{"train.steps": 40, "train.max_bad_steps": 3, "resume": "latest"},
            **{"train.checkpoint_every": 100},
        ),
    )
    trainer = Trainer(cfg)
    discriminator = trainer.algorithm.local("discriminator")
    saved = torch.load(good / checkpoint.SHARED_FILE, weights_only=True)["network/discriminator"]
    loss = trainer.algorithm.loss

    def nan_d_loss(phase: Phase, batch: object) -> tuple[torch.Tensor, dict]:
        value, metrics = loss(phase, batch)
        return (value * math.nan if phase.name == "d" else value), metrics

    trainer.algorithm.loss = nan_d_loss  # type: ignore[method-assign]
    with pytest.raises(NonFiniteTrainingError, match="3 updates in a row.*phase d at step 5"):
        trainer.train()
    # D resumed from the checkpoint and every one of its updates since was skipped.
    for name, param in discriminator.named_parameters():
        assert torch.equal(param, saved[name]), f"a skipped update changed {name}"
    assert trainer.progress.skipped_updates == 3
    # Nothing was saved over the good checkpoint, which stays the newest.
    assert rundir.latest_checkpoint(run_dir) == good


def test_skipped_updates_are_logged(tmp_path: Path, glyph_shards: Path) -> None:
    cfg = load_config(None, overrides(tmp_path / "run", glyph_shards, **{"train.steps": 2}))
    trainer = Trainer(cfg)
    loss = trainer.algorithm.loss
    calls = {"g": 0}

    def nan_first_g(phase: Phase, batch: object) -> tuple[torch.Tensor, dict]:
        value, metrics = loss(phase, batch)
        if phase.name == "g":
            calls["g"] += 1
            if calls["g"] == 1:
                value = value * math.inf
        return value, metrics

    trainer.algorithm.loss = nan_first_g  # type: ignore[method-assign]
    trainer.train()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train/skipped_steps"] == 1
    assert rows[-1]["train/g_skipped"] == 0.5 and rows[-1]["train/d_skipped"] == 0.0


def test_nonfinite_weights_are_never_saved(tmp_path: Path, glyph_shards: Path) -> None:
    trainer = Trainer(load_config(None, overrides(tmp_path / "run", glyph_shards)))
    with torch.no_grad():
        next(trainer.algorithm.local("generator").parameters()).fill_(math.nan)
    with pytest.raises(NonFiniteTrainingError, match="network/generator has non-finite weights"):
        trainer.save_checkpoint()
    assert rundir.latest_checkpoint(tmp_path / "run") is None


class _Pwn:
    """Unpickling this runs code: it sets an environment variable the test then looks for."""

    def __reduce__(self) -> tuple:
        return (exec, (f"import os; os.environ[{MARKER_ENV!r}] = '1'",))


def test_a_checkpoint_holding_a_malicious_pickle_is_refused_without_running_it(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    Trainer(load_config(None, overrides(run_dir, glyph_shards, **{"train.steps": 2}))).train()
    latest = rundir.latest_checkpoint(run_dir)
    state = latest / checkpoint.SHARED_FILE
    torch.save({"progress": _Pwn()}, state)
    cfg = load_config(None, overrides(run_dir, glyph_shards, **{"resume": "latest"}))
    with pytest.raises(ConfigError, match="refused: loading them could run code"):
        Trainer(cfg).train()
    import os

    assert MARKER_ENV not in os.environ, "the pickle ran"
    # The same in a generator file: `gandist sample` refuses it in one line.
    torch.save({"generator": _Pwn(), "step": 2}, latest / rundir.GENERATOR_FILE)
    with pytest.raises(ValueError, match="refused"):
        rundir.load_generator_weights(run_dir)
    assert MARKER_ENV not in os.environ


def test_resuming_with_ema_switched_off_names_what_differs(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    ema = {"train.steps": 2, "train.ema_half_life_images": 64}
    Trainer(load_config(None, overrides(run_dir, glyph_shards, **ema))).train()
    cfg = load_config(None, overrides(run_dir, glyph_shards, **{"resume": "latest"}))
    with pytest.raises(ConfigError) as err:
        Trainer(cfg).train()
    message = str(err.value)
    assert "\n" not in message
    assert (
        "the checkpoint has ema (train.ema_half_life_images > 0) and this run does not" in message
    )


def test_resuming_with_fp16_switched_on_names_the_scalers(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    Trainer(load_config(None, overrides(run_dir, glyph_shards, **{"train.steps": 2}))).train()
    AcceleratorState._reset_state(reset_partial_state=True)  # another precision, same process
    cfg = load_config(
        None,
        overrides(run_dir, glyph_shards, **{"resume": "latest", "train.mixed_precision": "fp16"}),
    )
    with pytest.raises(
        ConfigError, match=r"this run has scaler/d, scaler/g \(train.mixed_precision=fp16\)"
    ):
        Trainer(cfg).train()


def test_an_older_accelerate_checkpoint_gives_one_line(tmp_path: Path, glyph_shards: Path) -> None:
    run_dir = tmp_path / "run"
    old = rundir.checkpoint_dir(run_dir, 2)
    old.mkdir(parents=True)
    (old / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps({"step": 2}))
    (old / rundir.COMPLETE).write_text("2\n")
    cfg = load_config(None, overrides(run_dir, glyph_shards, **{"resume": "latest"}))
    with pytest.raises(ConfigError, match="older gandist .Accelerate's pickled format"):
        Trainer(cfg).train()


def test_a_resumed_run_trains_with_the_learning_rates_it_was_given(
    tmp_path: Path, glyph_shards: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    schedule = {"optim.lr_schedule": "linear", "train.steps": 4, "train.checkpoint_every": 2}
    Trainer(load_config(None, overrides(run_dir, glyph_shards, **schedule))).train()
    first = rundir.checkpoint_dir(run_dir, 2)
    changed = {**schedule, "resume": str(first), "optim.g_lr": 1e-3, "train.steps": 4}
    trainer = Trainer(load_config(None, overrides(run_dir, glyph_shards, **changed)))
    rates: list[float] = []
    step = trainer.train_step

    def record_rate() -> dict:
        rates.append(trainer.updaters["g"].learning_rate)
        return step()

    trainer.train_step = record_rate  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING):
        trainer.train()
    # The linear schedule at steps 2 and 3 of 4, on the new base rate, not the saved 2e-4.
    assert rates == pytest.approx([1e-3 * 2 / 4, 1e-3 * 1 / 4])
    assert trainer.updaters["d"].learning_rate == pytest.approx(0.0)
    assert "g lr 0.0002 -> 0.001" in caplog.text
    # Rolling back to step 2 fenced the old steps 4 off: latest is this line's step 4.
    fenced = list((run_dir / "checkpoints").glob("abandoned-*"))
    assert len(fenced) == 1 and (fenced[0] / "step-00000004").is_dir()
    latest = rundir.latest_checkpoint(run_dir)
    assert latest.name == "step-00000004"
    assert "g_lr: 0.001" in (latest / rundir.CONFIG_FILE).read_text()


@pytest.mark.slow
@pytest.mark.dist
def test_stop_and_resume_is_bit_exact_on_two_ranks(tmp_path: Path, glyph_shards: Path) -> None:
    script = Path(__file__).parent / "scripts" / "resume_exact_two_ranks.py"
    run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(glyph_shards), str(tmp_path)],
        timeout=400,
    )  # fmt: skip
    for rank in (0, 1):
        report = json.loads((tmp_path / f"report-{rank}.json").read_text())
        assert report["stopped_at"] == 3 and report["resumed_to"] == 6
        assert report["differences"] == [], report["differences"]


def test_a_run_prints_one_startup_summary(
    tmp_path: Path, glyph_shards: Path, capsys: pytest.CaptureFixture
) -> None:
    Trainer(load_config(None, overrides(tmp_path / "run", glyph_shards))).train()
    out = capsys.readouterr().out
    assert out.count("gandist: run run in") == 1
    assert f"image shards {glyph_shards}: 8 shards, 256 samples at 32 px" in out
    assert "model dcgan (generator " in out and "discriminator " in out
    assert "ranks 1 x batch 8 on cpu, precision fp32" in out


def test_a_saturated_discriminator_warns_once_naming_the_remedies() -> None:
    from gandist.training.console import SaturationWatch

    winning = {"train/d_real": 0.99, "train/d_fake": 0.01}
    collapsed = {"train/sample_diversity": 0.05, "train/real_diversity": 0.8}
    watch = SaturationWatch(patience=3)
    assert [watch.update(winning | collapsed, step) for step in (1, 2)] == [None, None]
    warning = watch.update(winning | collapsed, 3)
    assert warning and "train.augment" in warning and "optim.d_lr" in warning
    assert "reg.r1_gamma" in warning
    assert watch.update(winning | collapsed, 4) is None  # once
    # A confident D whose G still covers the data is no reason to warn, nor a short streak.
    diverse = {"train/sample_diversity": 0.7, "train/real_diversity": 0.8}
    calm = SaturationWatch(patience=3)
    assert [calm.update(winning | diverse, s) for s in range(10)] == [None] * 10
    broken = SaturationWatch(patience=3)
    steps = [winning | collapsed, winning | collapsed, {}, winning | collapsed]
    assert [broken.update(v, s) for s, v in enumerate(steps)] == [None] * 4
    # Losses that log logits (hinge, least squares) use the logit margin instead.
    margin = {"train/real_logit": 4.0, "train/fake_logit": -4.0}
    logits = SaturationWatch(patience=1)
    assert logits.update(margin | collapsed, 1) is not None


def test_a_resume_typo_names_the_accepted_values(tmp_path: Path, glyph_shards: Path) -> None:
    result = run(
        [sys.executable, "-m", "gandist.train", "configs/dcgan.yaml",
         *overrides(tmp_path / "run", glyph_shards), "resume=lastest"],
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gandist: error: resume='lastest' does not exist; use resume=latest (newest checkpoint, "
        "or a fresh start), a checkpoint folder or a run directory"
    ]
    assert not (tmp_path / "run").exists()
