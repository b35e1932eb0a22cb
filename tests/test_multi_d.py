"""Several discriminators (model.num_discriminators): each is trained, G answers to all of them,
a checkpoint keeps every one, and what cannot work is refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gandist import checkpoint, rundir
from gandist.errors import ConfigError
from gandist.models import generate
from gandist.training.algorithm import Phase
from gandist.training.config import load_config
from gandist.training.multi_d import view
from gandist.training.trainer import Trainer
from tests.conftest import tiny_overrides

D, D1 = "discriminator", "discriminator_1"


def overrides(run_dir: Path, shards: Path, **extra: object) -> list[str]:
    two = {"model.num_discriminators": 2, "tracking.wandb": False}
    return tiny_overrides(run_dir, shards, **{**two, **extra})


@pytest.mark.parametrize("mode", ["scales", "ensemble"])
def test_the_d_phase_gives_every_discriminator_gradients_and_steps_it(
    tmp_path: Path, glyph_shards: Path, mode: str
) -> None:
    trainer = Trainer(
        load_config(None, overrides(tmp_path, glyph_shards, **{"model.multi_d": mode}))
    )
    algorithm = trainer.algorithm
    assert algorithm.discriminators == (D, D1)
    # scales: the second D is a DCGAN discriminator for 16 px input (32 px pooled once).
    side = 16 if mode == "scales" else 32
    assert algorithm.local(D1)(torch.zeros(2, 3, side, side)).shape == (2,)
    before = {n: [p.detach().clone() for p in algorithm.local(n).parameters()] for n in (D, D1)}
    grads: dict[str, bool] = {}
    step = trainer.updaters["d"].step

    def record(loss: torch.Tensor) -> object:  # every D's gradient right after the backward
        result = step(loss)
        for name in (D, D1):
            params = list(algorithm.local(name).parameters())
            grads[name] = all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
        return result

    trainer.updaters["d"].step = record  # type: ignore[method-assign]
    (d_phase,) = [p for p in algorithm.phases(0) if p.name == "d"]
    assert d_phase.trains == (D, D1)  # both unfrozen in the D phase
    metrics = trainer.run_phase(d_phase)
    assert grads == {D: True, D1: True}
    for name in (D, D1):
        after = list(algorithm.local(name).parameters())
        assert any(not torch.equal(a, b) for a, b in zip(after, before[name], strict=True)), name
    # The logged d_loss is the mean of the two discriminators' own losses.
    assert torch.allclose(metrics["d_loss"], (metrics["d0_loss"] + metrics["d1_loss"]) / 2)


def test_the_generator_loss_averages_every_discriminator(
    tmp_path: Path, glyph_shards: Path
) -> None:
    trainer = Trainer(load_config(None, overrides(tmp_path, glyph_shards)))
    algorithm = trainer.algorithm
    g_phase = Phase("g", ("generator",), "g", False, 0)
    torch.manual_seed(3)
    with algorithm.trainable(g_phase):
        loss, metrics = algorithm.loss(g_phase, None)
    # The same fake batch by hand: each D's nonsaturating loss on its own view, then the mean.
    torch.manual_seed(3)
    batch = trainer.batch_per_rank
    with torch.no_grad():
        fake = generate(algorithm.local("generator"), algorithm._latents(batch), None)
        own = [
            torch.nn.functional.softplus(-algorithm.local(name)(view(fake, k, "scales"))).mean()
            for k, name in enumerate((D, D1))
        ]
    assert not torch.allclose(own[0], own[1])  # the second D says something else
    assert torch.allclose(loss.detach(), (own[0] + own[1]) / 2, atol=1e-6)
    assert torch.allclose(metrics["g1_loss"], own[1], atol=1e-6)
    # And G's gradient carries the second D's: without it, G's gradient changes.
    loss.backward()
    both = [p.grad.clone() for p in algorithm.local("generator").parameters()]
    algorithm.local("generator").zero_grad()
    torch.manual_seed(3)
    fake = generate(algorithm.local("generator"), algorithm._latents(batch), None)
    only_first = torch.nn.functional.softplus(-algorithm.local(D)(fake)).mean() / 2
    only_first.backward()
    first = [p.grad for p in algorithm.local("generator").parameters()]
    assert any(not torch.allclose(a, b) for a, b in zip(both, first, strict=True))


def test_a_checkpoint_keeps_every_discriminator_and_resume_restores_them(
    tmp_path: Path, glyph_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    first = Trainer(load_config(None, overrides(run_dir, glyph_shards, **{"train.steps": 2})))
    first.train()
    saved = torch.load(
        rundir.checkpoint_dir(run_dir, 2) / checkpoint.SHARED_FILE, weights_only=True
    )
    assert {f"network/{D}", f"network/{D1}"} <= set(saved)
    trained = {n: first.algorithm.local(n).state_dict() for n in (D, D1)}
    resumed = Trainer(
        load_config(
            None, overrides(run_dir, glyph_shards, **{"train.steps": 2, "resume": "latest"})
        )
    )
    resumed.train()  # already at step 2: restores and stops
    for name in (D, D1):
        state = resumed.algorithm.local(name).state_dict()
        assert all(torch.equal(state[k], trained[name][k]) for k in trained[name]), name
    # A run with one D cannot silently drop the second D's training.
    one = overrides(run_dir, glyph_shards, **{"model.num_discriminators": 1, "resume": "latest"})
    with pytest.raises(ConfigError, match="model.num_discriminators: 2 in the checkpoint, 1 now"):
        Trainer(load_config(None, one)).train()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"model.num_discriminators": 4},
            r"model.num_discriminators=4 with model.multi_d=scales gives the last D 4 px images "
            r".*use model.num_discriminators<=3 or model.multi_d=ensemble",
        ),
        (
            {"data.kind": "audio", "model.name": "wavegan", "data.length": 16384},
            r"model.multi_d=scales downsamples images, and data.kind=audio: use "
            r"model.multi_d=ensemble",
        ),
        (
            {"model.name": "cyclegan", "train.algorithm": "cyclegan", "data.shards_b": "b"},
            r"model.num_discriminators=2 works with train.algorithm=adversarial",
        ),
    ],
)
def test_discriminator_sets_that_cannot_work_are_refused_in_one_line(
    tmp_path: Path, extra: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, overrides(tmp_path, tmp_path, **extra))
    assert "\n" not in str(err.value)


def test_an_audio_ensemble_of_discriminators_is_accepted(tmp_path: Path) -> None:
    audio = {"data.kind": "audio", "model.name": "wavegan", "data.length": 16384}
    cfg = load_config(None, overrides(tmp_path, tmp_path, **audio, **{"model.multi_d": "ensemble"}))
    assert cfg.model.num_discriminators == 2
