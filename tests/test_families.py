"""Every GAN family trains under 2 real gloo ranks; conditional sampling draws the asked class;
each penalty, clip and weight-clip acts on the gradients and weights by the amount it should."""

from __future__ import annotations

import copy
import itertools
import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

from gandist import cli
from gandist.training import adversarial
from gandist.training.algorithm import Phase
from gandist.training.config import load_config
from gandist.training.trainer import Trainer
from tests.conftest import ROOT, run

FAMILIES = [
    "dcgan",
    "dcgan64",
    "conditional",
    "wgan",
    "wgan-gp",
    "sngan",
    "biggan",
    "stylegan2",
    "mlp",
]
FP16_RUNS = ["stylegan2:fp16", "wgan-gp:fp16"]  # penalties (R1, path length, GP) under fp16
VARIANT_RUNS = ["dcgan-md2"]  # two discriminators, R1, LeCam and the mode-seeking term
RUNS = [*FAMILIES, *(spec.replace(":", "-") for spec in FP16_RUNS), *VARIANT_RUNS]


@pytest.fixture(scope="module")
def families_run(glyph_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 2-rank torchrun launch that trains every family (see tests/scripts/train_families.py)."""
    out = tmp_path_factory.mktemp("families")
    run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            str(ROOT / "tests/scripts/train_families.py"), str(glyph_shards), str(out),
            *FAMILIES, *FP16_RUNS, *VARIANT_RUNS,
        ],
        timeout=400,
    )  # fmt: skip
    return out


def _results(out: Path) -> dict:
    return json.loads((out / "results-rank0.json").read_text())


@pytest.mark.dist
@pytest.mark.parametrize("run_name", RUNS)
def test_family_trains_on_two_ranks_with_finite_losses(families_run: Path, run_name: str) -> None:
    steps = next(r for r in _results(families_run)["runs"] if r["run"] == run_name)["steps"]
    rows = [json.loads(line) for line in (families_run / run_name / "metrics.jsonl").open()]
    assert [row["step"] for row in rows] == list(range(1, steps + 1))
    for row in rows:
        for key in ("train/d_loss", "train/g_loss", "train/sample_diversity"):
            assert math.isfinite(row[key]), f"{run_name} step {row['step']}: {key}={row[key]}"
        assert row["train/sample_diversity"] > 0
    assert (families_run / run_name / "checkpoints" / f"step-{steps:08d}" / "COMPLETE").is_file()
    assert (families_run / run_name / "samples" / f"step-{steps:08d}.png").is_file()


@pytest.mark.dist
@pytest.mark.parametrize("run_name", RUNS)
def test_family_weights_identical_across_ranks(families_run: Path, run_name: str) -> None:
    rank0 = torch.load(families_run / run_name / "rank0.pt")
    rank1 = torch.load(families_run / run_name / "rank1.pt")
    trained = ["generator", "discriminator"] + (["discriminator_1"] if "md2" in run_name else [])
    # Training changed G and every D, so equal weights are DDP's doing, not untouched initial values.
    assert rank0["moved"] == dict.fromkeys(trained, True)
    rank0, rank1 = rank0["weights"], rank1["weights"]
    assert set(rank0) == {*trained, "ema"}
    for module, params in rank0.items():
        for name, value in params.items():
            assert torch.equal(value, rank1[module][name]), f"{run_name} {module}.{name} differs"
    assert rank0["generator"].keys() == rank0["ema"].keys()


@pytest.mark.dist
def test_penalties_logged_where_enabled(families_run: Path) -> None:
    def last(name: str) -> dict:
        return json.loads((families_run / name / "metrics.jsonl").read_text().splitlines()[-1])

    # Each is a sum of squares that is never exactly 0 on a random network; that each one acts
    # on the gradients by its weight is checked by the one-process tests below.
    values = [
        last("stylegan2")["train/r1"],
        last("stylegan2")["train/pl"],
        last("wgan-gp")["train/gp"],
        last("biggan")["train/ortho"],
        last("dcgan")["train/d_grad_norm"],
        *(last("dcgan-md2")[f"train/{key}"] for key in ("r1", "lecam", "mode_seeking", "d1_loss")),
    ]
    assert all(math.isfinite(value) and value > 0 for value in values), values


@pytest.mark.dist
@pytest.mark.parametrize("run_name", ["stylegan2-fp16", "wgan-gp-fp16"])
def test_fp16_generator_overflow_leaves_discriminator_loss_scale_alone(
    families_run: Path, run_name: str
) -> None:
    result = next(r for r in _results(families_run)["runs"] if r["run"] == run_name)
    assert result["g_step_skipped"], "a G step with inf gradients must be skipped"
    assert result["scales_after"]["g"] == result["scales_before"]["g"] / 2
    assert result["scales_after"]["d"] == result["scales_before"]["d"]
    rows = [json.loads(line) for line in (families_run / run_name / "metrics.jsonl").open()]
    assert {"train/g_loss_scale", "train/d_loss_scale"} <= rows[-1].keys()
    # Once the scales have backed off, the penalties computed under fp16 are finite.
    penalties = ["train/r1", "train/pl"] if run_name.startswith("stylegan2") else ["train/gp"]
    for key in penalties:
        assert math.isfinite(rows[-1][key]), f"{run_name}: {key}={rows[-1][key]}"


@pytest.mark.dist
@pytest.mark.parametrize("run_name", ["dcgan", "stylegan2-fp16"])
def test_resume_restores_ema_schedules_and_scalers(families_run: Path, run_name: str) -> None:
    result = next(r for r in _results(families_run)["runs"] if r["run"] == run_name)
    assert all(result["resume"].values()), result["resume"]
    assert ("scalers" in result["resume"]) == run_name.endswith("fp16")


@pytest.mark.dist
def test_conditional_model_refuses_batches_without_labels(families_run: Path) -> None:
    message = _results(families_run)["unlabelled_error"]
    assert "class-conditional" in message and "'cls'" in message


@pytest.mark.dist
def test_sample_class_draws_the_requested_class(families_run: Path, tmp_path: Path) -> None:
    from gandist.models import generate
    from gandist.rundir import find_checkpoint
    from gandist.runs.sample import load_generator, sample_grid
    from gandist.tracking import image_grid

    # Two steps barely move the class-conditional BN from its zero start, too little to survive
    # 8-bit grids: give every class its own BN biases in a copy of the last checkpoint.
    run_dir = tmp_path / "checkpoint"
    shutil.copytree(find_checkpoint(families_run / "conditional"), run_dir)
    payload = torch.load(run_dir / "generator.pt", weights_only=True)
    torch.manual_seed(0)
    for name, value in payload["generator"].items():
        if name.endswith("bias.weight"):  # ConditionalBatchNorm2d.bias: class -> channel bias
            value.normal_()
    torch.save(payload, run_dir / "generator.pt")
    generator, cfg = load_generator(run_dir)
    latents = torch.randn(8, cfg.model.latent_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = {k: generate(generator, latents, torch.full((8,), k)) for k in (3, 4)}
    assert not torch.allclose(expected[3], expected[4]), "the label must change the images"
    grid = sample_grid(run_dir, num=8, out=tmp_path / "class3.png", seed=5, class_index=3)
    image_grid(expected[3], tmp_path / "expected3.png")
    image_grid(expected[4], tmp_path / "expected4.png")
    assert grid.read_bytes() == (tmp_path / "expected3.png").read_bytes()
    assert grid.read_bytes() != (tmp_path / "expected4.png").read_bytes()


@pytest.mark.dist
def test_sample_cli_class_option(
    families_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    conditional, out = str(families_run / "conditional"), str(tmp_path / "seven.png")
    assert cli.main(["sample", conditional, "--class", "7", "--num", "4", "--out", out]) == 0
    assert Path(out).is_file()
    assert cli.main(["sample", str(families_run / "dcgan"), "--class", "1", "--out", out]) == 2
    assert "unconditional" in capsys.readouterr().err
    assert cli.main(["sample", conditional, "--class", "10", "--out", out]) == 2
    assert "[0, 9]" in capsys.readouterr().err


# ---- penalties, clipping and augmentation on one process, against hand computations ---------
# Each penalty test computes one phase's loss twice from the same weights, buffers and RNG state,
# with the penalty's weight w and with 0, and checks that the difference of the trained
# network's gradients is w times the gradient of the penalty, computed here by hand from the
# graph the algorithm built: a penalty logged but not added to the loss, or added with the
# wrong weight, fails.

TINY = {
    "data.num_workers": 0,
    "model.latent_dim": 16,
    "model.g_width": 4,
    "model.d_width": 4,
    "model.mapping_layers": 2,
    "train.batch_size": 4,
    "train.progress_bar": False,
    "tracking.wandb": False,
}


def _trainer(config: str, run_dir: Path, shards: Path, **extra: object) -> Trainer:
    values = TINY | {"output_dir": run_dir, "data.shards": shards} | extra
    cfg = load_config(config, [f"{k}={v}" for k, v in values.items()])
    real = {
        "image": torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1,
        "label": torch.tensor([0, 3, 5, 9]),
    }
    trainer = Trainer(cfg, batches=itertools.repeat(real))
    trainer.algorithm.diagnostics = False
    return trainer


class _Replay:
    """Runs a phase's loss again and again from one saved state: weights, buffers and RNG."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer, self.algorithm = trainer, trainer.algorithm
        self.weights = {
            n: copy.deepcopy(m.state_dict()) for n, m in self.algorithm.networks.items()
        }
        self.rng = torch.get_rng_state()

    def gradients(self, phase: Phase, network: str, **reg: float) -> list[torch.Tensor]:
        for name, module in self.algorithm.networks.items():
            module.load_state_dict(self.weights[name])
        torch.set_rng_state(self.rng)
        for key, value in reg.items():
            setattr(self.trainer.cfg.reg, key, value)
        batch = self.trainer.data.next_batch() if phase.needs_real else None
        params = list(self.algorithm.networks[network].parameters())
        with self.algorithm.trainable(phase):
            loss, _ = self.algorithm.loss(phase, batch)
            return list(_grad(loss, params, retain_graph=True))


def _spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple]:
    """Record the arguments of each call the algorithm makes to the penalty `name`."""
    calls: list[tuple] = []
    original = getattr(adversarial, name)

    def record(*args: object, **kwargs: object) -> object:
        if name == "path_length_penalty":  # draw the noise here, as the penalty would, to see it
            images = args[0]
            kwargs["noise"] = torch.randn_like(images, dtype=torch.float32)
            args = (*args[:2], args[2].detach().clone())
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(adversarial, name, record)
    return calls


def _assert_difference_is(
    with_penalty: list[torch.Tensor], without: list[torch.Tensor], expected: list[torch.Tensor]
) -> None:
    difference = torch.cat([(a - b).flatten() for a, b in zip(with_penalty, without, strict=True)])
    expected_flat = torch.cat([e.flatten() for e in expected])
    assert expected_flat.norm() > 0, "the penalty's own gradient is zero: the check is void"
    error = (difference - expected_flat).norm() / expected_flat.norm()
    assert error < 1e-4, f"gradient change off by {error:.2e} of the penalty's gradient"


def _grad(output: torch.Tensor, params: list, **kwargs: bool) -> tuple[torch.Tensor, ...]:
    """d output / d params, zeros for parameters it does not reach (a bias under R1)."""
    return torch.autograd.grad(output, params, allow_unused=True, materialize_grads=True, **kwargs)


def _params(trainer: Trainer, network: str) -> list[torch.nn.Parameter]:
    return list(trainer.algorithm.networks[network].parameters())


def test_gradient_penalty_changes_d_gradients_by_lambda_times_its_gradient(
    tmp_path: Path, glyph_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = _trainer("configs/wgan-gp.yaml", tmp_path / "run", glyph_shards)
    d_phase = trainer.algorithm.phases(0)[0]
    replay, calls = _Replay(trainer), _spy(monkeypatch, "gradient_penalty")
    lam = 10.0
    without = replay.gradients(d_phase, "discriminator", gp_weight=0.0)
    assert not calls
    with_gp = replay.gradients(d_phase, "discriminator", gp_weight=lam)
    ((points, logits, *_), _kwargs) = calls[0]
    # The points lie strictly between the real and the fake images, not on either.
    real = trainer.data.next_batch()["image"]
    assert not torch.allclose(points, real) and points.requires_grad
    # (|grad_x D(x)|_2 - 1)^2, averaged over the batch, by hand.
    (input_grads,) = torch.autograd.grad(logits.sum(), points, create_graph=True)
    penalty = ((input_grads.flatten(1).norm(dim=1) - 1) ** 2).mean()
    expected = _grad(lam * penalty, _params(trainer, "discriminator"))
    _assert_difference_is(with_gp, without, expected)


def test_lazy_r1_changes_d_gradients_by_gamma_half_times_interval_on_its_steps_only(
    tmp_path: Path, glyph_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = _trainer("configs/stylegan2.yaml", tmp_path / "run", glyph_shards)
    gamma, every = 0.5, 2
    trainer.cfg.reg.r1_every = every
    replay, calls = _Replay(trainer), _spy(monkeypatch, "r1_penalty")
    on, off = trainer.algorithm.phases(0)[0], trainer.algorithm.phases(1)[0]
    assert (on.index, off.index) == (0, 1)
    without = replay.gradients(on, "discriminator", r1_gamma=0.0)
    with_r1 = replay.gradients(on, "discriminator", r1_gamma=gamma)
    ((reals, logits, *_), _kwargs) = calls[0]
    assert torch.equal(reals.detach(), trainer.data.next_batch()["image"])  # on the reals
    (input_grads,) = torch.autograd.grad(logits.sum(), reals, create_graph=True)
    penalty = input_grads.flatten(1).square().sum(1).mean()
    expected = _grad(gamma / 2 * every * penalty, _params(trainer, "discriminator"))
    _assert_difference_is(with_r1, without, expected)
    # The D phase between two lazy ones carries no penalty.
    calls.clear()
    between = replay.gradients(off, "discriminator", r1_gamma=gamma)
    assert not calls
    for a, b in zip(between, replay.gradients(off, "discriminator", r1_gamma=0.0), strict=True):
        assert torch.equal(a, b)


def test_path_length_penalty_changes_g_gradients_by_its_weight_times_interval(
    tmp_path: Path, glyph_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = _trainer("configs/stylegan2.yaml", tmp_path / "run", glyph_shards)
    weight, every = 2.0, 2
    trainer.cfg.reg.pl_every = every
    generator = trainer.algorithm.local("generator")
    generator.pl_mean.fill_(0.3)  # a target away from zero, so its role in the penalty shows
    replay, calls = _Replay(trainer), _spy(monkeypatch, "path_length_penalty")
    g_phase = trainer.algorithm.phases(0)[-1]
    assert (g_phase.name, g_phase.index) == ("g", 0)
    without = replay.gradients(g_phase, "generator", pl_weight=0.0)
    with_pl = replay.gradients(g_phase, "generator", pl_weight=weight)
    ((images, ws, pl_mean), kwargs) = calls[0]
    # StyleGAN2: |J_w^T y| with y ~ N(0, I) / sqrt(H W), against a running mean of those lengths.
    noise = kwargs["noise"] / (images.shape[2] * images.shape[3]) ** 0.5
    (jacobian_y,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
    lengths = jacobian_y.square().sum(2).mean(1).sqrt()
    target = pl_mean + 0.01 * (lengths.mean().detach() - pl_mean)
    assert float(generator.pl_mean) == pytest.approx(float(target))  # the running mean moved
    penalty = (lengths - target).square().mean()
    expected = _grad(weight * every * penalty, _params(trainer, "generator"))
    _assert_difference_is(with_pl, without, expected)


def test_orthogonal_regularisation_changes_g_gradients_by_its_weight(
    tmp_path: Path, glyph_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = _trainer("configs/biggan.yaml", tmp_path / "run", glyph_shards)
    replay, calls = _Replay(trainer), _spy(monkeypatch, "orthogonal_penalty")
    g_phase = trainer.algorithm.phases(0)[-1]
    weight = 0.5
    without = replay.gradients(g_phase, "generator", ortho_weight=0.0)
    with_ortho = replay.gradients(g_phase, "generator", ortho_weight=weight)
    ((weights,), _kwargs) = calls[0]
    assert len(weights) >= 3
    # Sum over layers of |W W^T (1 - I)|_F^2 on the [out, fan_in] weights, by hand.
    penalty = sum(
        (w.flatten(1) @ w.flatten(1).t() * (1 - torch.eye(w.shape[0]))).square().sum()
        for w in weights
    )
    expected = _grad(weight * penalty, _params(trainer, "generator"))
    _assert_difference_is(with_ortho, without, expected)


def test_grad_norm_is_the_unclipped_norm_and_the_update_uses_clipped_gradients(
    tmp_path: Path, glyph_shards: Path
) -> None:
    clip = 1e-3
    trainer = _trainer(
        "configs/dcgan.yaml", tmp_path / "run", glyph_shards, **{"optim.grad_clip_norm": clip}
    )
    d_phase = trainer.algorithm.phases(0)[0]
    replay = _Replay(trainer)
    unclipped = replay.gradients(d_phase, "discriminator")
    norm = torch.cat([g.flatten() for g in unclipped]).norm()
    assert norm > 10 * clip  # so clipping acts
    for name, module in trainer.algorithm.networks.items():
        module.load_state_dict(replay.weights[name])
    torch.set_rng_state(replay.rng)
    metrics = trainer.run_phase(d_phase)
    assert float(metrics["d_grad_norm"]) == pytest.approx(float(norm), rel=1e-5)
    for grad, param in zip(unclipped, _params(trainer, "discriminator"), strict=True):
        torch.testing.assert_close(param.grad, grad * clip / (norm + 1e-6))


def test_wgan_weight_clipping_holds_d_within_c_after_each_update_and_leaves_g_alone(
    tmp_path: Path, glyph_shards: Path
) -> None:
    trainer = _trainer("configs/wgan.yaml", tmp_path / "run", glyph_shards)
    clip = trainer.cfg.reg.weight_clip
    assert clip == 0.01
    discriminator = trainer.algorithm.local("discriminator")
    generator = trainer.algorithm.local("generator")
    with torch.no_grad():  # well outside [-c, c], so only the clamp can bring them back
        for param in discriminator.parameters():
            param.copy_(torch.randn_like(param).sign() * 10 * clip)
        first_g = next(generator.parameters())
        first_g.fill_(1.0)
    d_phase, *_, g_phase = trainer.algorithm.phases(0)
    trainer.run_phase(d_phase)
    values = torch.cat([p.detach().flatten() for p in discriminator.parameters()])
    assert values.abs().max() <= clip
    assert (values.abs() == clip).float().mean() > 0.9  # clamped, not merely shrunk
    trainer.run_phase(g_phase)
    assert first_g.detach().min() > 0.9  # G is not clipped
