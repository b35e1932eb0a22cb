"""CycleGAN: networks, image pool, schedule, config refusals, two streams, training, translate."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gandist.data.unpaired import UnpairedStream
from gandist.errors import ConfigError
from gandist.models.config import ModelConfig
from gandist.models.cyclegan import (
    PATCH_RECEPTIVE_FIELD,
    PatchDiscriminator,
    ResidualBlock,
    ResnetTranslator,
    build,
)
from gandist.schedules import lr_multiplier
from gandist.training.algorithm import Runtime
from gandist.training.config import Config, config_warnings, load_config
from gandist.training.cyclegan import CycleGAN, translation_grid
from gandist.training.image_pool import ImagePool
from tests.conftest import gandist_cli, run

NUM_A, NUM_B, PER_SHARD = 96, 64, 16


@pytest.fixture(scope="session")
def glyph_domains(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT/a (96 glyphs, 6 shards) and OUT/b (64 glyphs, 4 shards): sets of different sizes."""
    out = tmp_path_factory.mktemp("glyph-domains")
    gandist_cli(
        "data", "synth", "glyph-domains", "--out", str(out), "--num", str(NUM_A),
        "--num-b", str(NUM_B), "--shard-size", str(PER_SHARD), "--workers", "1", "--quiet",
    )  # fmt: skip
    return out


def cyclegan_overrides(run_dir: Path, domains: Path, **extra: object) -> list[str]:
    values: dict[str, object] = {
        "output_dir": run_dir, "data.shards": domains / "a", "data.shards_b": domains / "b",
        "data.num_workers": 0, "data.shuffle_buffer": 16, "model.g_width": 4,
        "model.d_width": 4, "model.res_blocks": 1, "train.steps": 4, "train.batch_size": 4,
        "train.log_every": 2, "train.sample_every": 2, "train.num_samples": 3,
        "train.checkpoint_every": 2, "train.progress_bar": False, "tracking.wandb": False,
        "optim.decay_after_steps": 2,  # the config's hold (600) would outlast these short runs
    }  # fmt: skip
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


# ---- networks ------------------------------------------------------------------------------


@pytest.mark.parametrize("num_blocks", [6, 9])
def test_translator_maps_images_to_images_of_the_same_shape(num_blocks: int) -> None:
    torch.manual_seed(0)
    translator = ResnetTranslator(3, width=8, num_blocks=num_blocks)
    assert sum(isinstance(m, ResidualBlock) for m in translator.modules()) == num_blocks
    images = torch.rand(2, 3, 32, 48) * 2 - 1
    out = translator(images)
    assert out.shape == images.shape
    assert out.abs().max() <= 1.0
    out.sum().backward()
    assert all(p.grad is not None for p in translator.parameters())
    # Instance norm without affine parameters and reflect padding, as in the paper.
    norms = [m for m in translator.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and not any(m.affine for m in norms)
    assert any(isinstance(m, nn.ReflectionPad2d) for m in translator.modules())


def test_patchgan_maps_256_px_to_a_30x30_map_of_logits() -> None:
    discriminator = PatchDiscriminator(3, width=8)
    assert discriminator(torch.zeros(2, 3, 256, 256)).shape == (2, 1, 30, 30)
    assert discriminator(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 2, 2)


def test_patchgan_output_sees_a_70x70_patch_of_the_input() -> None:
    torch.manual_seed(0)
    discriminator = PatchDiscriminator(1, width=4)
    # Instance norm mixes the whole image into every output; without it, what one output
    # depends on is exactly its receptive field.
    for name, module in list(discriminator.net.named_children()):
        if isinstance(module, nn.InstanceNorm2d):
            discriminator.net._modules[name] = nn.Identity()
    images = torch.randn(1, 1, 160, 160, requires_grad=True)
    logits = discriminator(images)
    centre = logits.shape[-1] // 2
    logits[0, 0, centre, centre].backward()
    rows = images.grad[0, 0].abs().sum(1).nonzero().flatten()
    cols = images.grad[0, 0].abs().sum(0).nonzero().flatten()
    assert PATCH_RECEPTIVE_FIELD == 70
    assert int(rows.max() - rows.min()) + 1 == PATCH_RECEPTIVE_FIELD
    assert int(cols.max() - cols.min()) + 1 == PATCH_RECEPTIVE_FIELD


def test_builder_refuses_a_resolution_the_networks_cannot_take() -> None:
    with pytest.raises(ConfigError, match="multiple of 4 and >= 24"):
        build(ModelConfig(name="cyclegan"), 30, 3)
    with pytest.raises(ConfigError, match="multiple of 4 and >= 24"):
        build(ModelConfig(name="cyclegan"), 16, 3)


# ---- the pool, the schedule, the grid ----------------------------------------------------


def test_image_pool_stores_while_filling_then_swaps_half_at_random() -> None:
    torch.manual_seed(0)
    pool = ImagePool(4)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: the new images themselves
    assert len(pool) == 4
    new = torch.arange(100.0, 164.0).view(64, 1, 1, 1)
    out = pool.query(new).flatten()
    from_pool = [v for v, n in zip(out.tolist(), new.flatten().tolist(), strict=True) if v != n]
    # About half come from the history, each one an image stored earlier (old or new).
    assert 16 < len(from_pool) < 48
    assert set(from_pool) <= set(range(4)) | set(range(100, 164))
    assert len(pool) == 4 and set(pool.images.flatten().tolist()) <= set(range(100, 164)) | set(
        range(4)
    )


def test_image_pool_state_continues_the_same_draws() -> None:
    torch.manual_seed(1)
    pool = ImagePool(3)
    pool.query(torch.randn(5, 2, 4, 4))
    saved_rng, state = torch.get_rng_state(), pool.state_dict()
    expected = pool.query(torch.ones(6, 2, 4, 4))
    restored = ImagePool(3)
    restored.load_state_dict(state)
    torch.set_rng_state(saved_rng)
    assert torch.equal(restored.query(torch.ones(6, 2, 4, 4)), expected)
    assert torch.equal(restored.images, pool.images)


def test_image_pool_of_size_zero_passes_images_through() -> None:
    pool = ImagePool(0)
    images = torch.randn(3, 1, 2, 2)
    assert torch.equal(pool.query(images), images) and len(pool) == 0


def test_linear_schedule_holds_the_rate_then_decays_to_zero() -> None:
    rates = [lr_multiplier(s, "linear", 0, 100, decay_after_steps=50) for s in range(101)]
    assert rates[:51] == [1.0] * 51
    assert rates[75] == pytest.approx(0.5)
    assert rates[100] == 0.0
    assert lr_multiplier(50, "linear", 0, 100) == pytest.approx(0.5)  # no hold: as before


def test_a_decay_that_starts_at_or_after_the_last_step_warns_naming_both_keys() -> None:
    def warnings(*overrides: str) -> list[str]:
        cfg = load_config("configs/cyclegan.yaml", ["data.shards=a", "data.shards_b=b", *overrides])
        return [w for w in config_warnings(cfg) if "decay_after_steps" in w]

    (warning,) = warnings("train.steps=1200", "optim.decay_after_steps=1500")
    assert "optim.decay_after_steps=1500" in warning and "train.steps=1200" in warning
    assert "never starts" in warning
    (warning,) = warnings(
        "train.steps=1200", "optim.decay_after_steps=1100", "optim.warmup_steps=100"
    )
    assert "optim.warmup_steps=100" in warning
    assert len(warnings("train.steps=1200", "optim.decay_after_steps=1200")) == 1
    # A decay that starts before the end, or a schedule without a decay: nothing to say.
    assert warnings("train.steps=1200", "optim.decay_after_steps=1199") == []
    assert warnings("train.steps=1200", "optim.decay_after_steps=600") == []
    assert warnings("optim.lr_schedule=constant", "optim.decay_after_steps=5000") == []


def test_translation_grid_puts_one_input_per_row() -> None:
    columns = [torch.full((3, 1, 4, 4), float(i) / 10) for i in range(6)]
    grid = translation_grid(columns, padding=2)
    assert grid.shape == (1, 3, 3 * 6 + 2, 6 * 6 + 2)  # make_grid makes grayscale RGB
    for row in range(3):
        for col in range(6):
            top, left = 2 + row * 6, 2 + col * 6
            assert torch.all(grid[0, 0, top : top + 4, left : left + 4] == col / 10)
    assert grid[0, 0, 0, 0] == -1.0  # black lines between the cells


# ---- config ------------------------------------------------------------------------------


def test_cyclegan_without_shards_b_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="data.shards_b must name the shards of domain B"):
        load_config("configs/dcgan.yaml", ["train.algorithm=cyclegan", "model.name=cyclegan"])


def test_model_and_algorithm_must_fit() -> None:
    with pytest.raises(ConfigError, match="train.algorithm=cyclegan trains model.name=cyclegan"):
        load_config("configs/dcgan.yaml", ["train.algorithm=cyclegan", "data.shards_b=x"])
    with pytest.raises(ConfigError, match="do not fit"):
        load_config("configs/cyclegan.yaml", ["train.algorithm=adversarial"])


def test_unknown_cycle_key_names_the_accepted_keys() -> None:
    with pytest.raises(ConfigError, match="accepted in cycle: cycle_weight, identity_weight"):
        load_config("configs/cyclegan.yaml", ["cycle.lambda_cycle=5"])


def test_train_command_refuses_missing_shards_b(tmp_path: Path, glyph_domains: Path) -> None:
    result = gandist_cli(
        "train", "configs/cyclegan.yaml", "--num-processes", "1",
        *cyclegan_overrides(tmp_path / "run", glyph_domains, **{"data.shards_b": tmp_path / "nope"}),
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("gandist: error: ") and "nope" in line and "data.shards_b" in line


# ---- training, translate, resume -----------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory: pytest.TempPathFactory, glyph_domains: Path) -> Path:
    """A 4-step CycleGAN run trained by `gandist train`, evaluated at step 4 with a (random)
    domain classifier as the extractor: OUT/run, OUT/classifier.pt, OUT/cache."""
    from gandist.metrics.domain import ImageClassifier, save_classifier

    out = tmp_path_factory.mktemp("cyclegan-run")
    torch.manual_seed(0)
    weights = save_classifier(ImageClassifier(3, 32, 10, width=4), out / "classifier.pt")
    gandist_cli(
        "train", "configs/cyclegan.yaml", "--num-processes", "1",
        *cyclegan_overrides(out / "run", glyph_domains, **eval_overrides(weights, out / "cache")),
    )  # fmt: skip
    return out


def eval_overrides(weights: Path, cache: Path) -> dict[str, object]:
    return {
        "eval.every": 4, "eval.extractor": "gandist-domain", "eval.weights_path": weights,
        "eval.num_samples": 16, "eval.num_real": 16, "eval.kid_subset_size": 8,
        "eval.max_share": 1, "eval.cache_dir": cache,
    }  # fmt: skip


def test_short_run_writes_translation_grids_and_pools_and_translate_writes_images(
    tmp_path: Path, glyph_domains: Path, evaluated_run: Path
) -> None:
    from gandist.rundir import GENERATOR_FILE, best_checkpoint, latest_checkpoint, load_tensors

    run_dir = evaluated_run / "run"
    # 3 fixed inputs, one per row: A, A->B, A->B->A, B, B->A, B->A->B as 32 px cells with
    # 2 px lines (the tracker grids one image as it is).
    for step in (2, 4):
        grid = Image.open(run_dir / "samples" / f"step-{step:08d}.png")
        assert grid.size == (6 * 34 + 2, 3 * 34 + 2)
    first_a = torch.from_numpy(np.asarray(grid)[2:34, 2:34].copy()).float()
    assert first_a.std() > 10  # a real glyph, not an empty cell
    checkpoint = latest_checkpoint(run_dir)
    exported = load_tensors(checkpoint / GENERATOR_FILE)["generator"]
    assert {key.split(".")[0] for key in exported} == {"ab", "ba"}
    pools = load_tensors(checkpoint / "rank-00000.pt")
    # 4 steps x 4 images per domain, all kept (pool_size 50).
    assert pools["pool/d_a"]["images"].shape == (16, 3, 32, 32)
    assert pools["pool/d_b"]["images"].shape == (16, 3, 32, 32)
    assert not torch.equal(pools["pool/d_a"]["images"], pools["pool/d_b"]["images"])
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [m for m in metrics if "train/cycle_l1" in m]
    assert logged and all(m["train/images_seen"] == m["step"] * 8 for m in logged)
    assert {"train/identity_l1", "train/d_a_loss", "train/d_b_loss", "data/bad_fraction_b"} <= set(
        logged[-1]
    )

    # Evaluation during training scored both directions; the best is chosen by A -> B FID.
    (scores,) = [m for m in metrics if "eval/fid" in m]
    keys = {"eval/fid_ba", "eval/cycle_l1", "eval/cycle_l1_ba", "eval/class_kept_ba"}
    assert keys <= set(scores) and scores["eval/num_samples_ba"] == 16
    assert best_checkpoint(run_dir) is not None

    out = tmp_path / "translated"
    result = gandist_cli(
        "translate", str(run_dir), "--from", str(glyph_domains / "b"), "--direction", "ba",
        "--out", str(out), "--batch-size", "10",
    )  # fmt: skip
    assert f"wrote {NUM_B} translated images (ba)" in result.stdout
    files = sorted(out.glob("*.png"))
    assert len(files) == NUM_B and files[0].name == "b00000000.png"
    assert Image.open(files[0]).size == (32, 32)

    refused = gandist_cli(
        "translate", str(run_dir), "--from", str(tmp_path / "missing"), "--direction", "ab",
        "--out", str(out), check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "missing" in refused.stderr.strip().splitlines()[-1]


def test_translate_refuses_a_noise_generator_run(tmp_path: Path, glyph_shards: Path) -> None:
    from tests.conftest import tiny_overrides

    run_dir = tmp_path / "dcgan"
    gandist_cli(
        "train", "configs/dcgan.yaml", "--num-processes", "1",
        *tiny_overrides(run_dir, glyph_shards, **{"train.steps": 2, "tracking.wandb": False}),
    )  # fmt: skip
    result = gandist_cli(
        "translate", str(run_dir), "--from", str(glyph_shards), "--direction", "ab",
        "--out", str(tmp_path / "out"), check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "needs a run of train.algorithm=cyclegan" in result.stderr


@pytest.mark.slow
@pytest.mark.dist
def test_translation_scores_are_the_same_on_one_and_two_ranks(evaluated_run: Path) -> None:
    overrides = [f"{k}={v}" for k, v in eval_overrides(
        evaluated_run / "classifier.pt", evaluated_run / "cache"
    ).items() if k != "eval.every"]  # fmt: skip
    run_dir = str(evaluated_run / "run")
    one = gandist_cli("eval", run_dir, *overrides).stdout
    two = run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "gandist.cli", "eval", run_dir, *overrides],
    ).stdout  # fmt: skip
    one, two = json.loads(one), json.loads(two)
    assert (one["eval/world_size"], two["eval/world_size"]) == (1, 2)
    for key in ("eval/fid", "eval/fid_ba", "eval/cycle_l1_ba", "eval/class_kept", "eval/kid_ba"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key


@pytest.mark.slow
@pytest.mark.dist
def test_two_rank_cyclegan_stop_and_resume_is_bit_exact_in_both_streams(
    tmp_path: Path, glyph_domains: Path
) -> None:
    script = Path(__file__).parent / "scripts" / "cyclegan_resume_two_ranks.py"
    run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(glyph_domains / "a"), str(glyph_domains / "b"), str(tmp_path)],
        timeout=400,
    )  # fmt: skip
    reports = [json.loads((tmp_path / f"report-{r}.json").read_text()) for r in (0, 1)]
    for report in reports:
        assert report["stopped_at"] == 3 and report["resumed_to"] == 6
        assert report["differences"] == [], report["differences"]
        # Both streams read 6 batches; both pools (size 3) filled and kept swapping.
        assert report["batches_a"] == report["batches_b"] == 6
        assert report["pool_sizes"] == [3, 3]
    # Each rank keeps its own history.
    assert reports[0]["pool_d_a"] != reports[1]["pool_d_a"]


def _bound_cyclegan(cfg: Config, device: torch.device) -> CycleGAN:
    algorithm = CycleGAN(cfg)
    algorithm.bind(
        Runtime(
            device=device, world_size=1, batch_per_rank=4, autocast=contextlib.nullcontext,
            unwrap=lambda module: module, grad_scale=lambda name: 1.0,
        )
    )  # fmt: skip
    return algorithm


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_both_domain_streams_take_the_runs_device_and_pin_only_on_cuda(
    tmp_path: Path, glyph_domains: Path, monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    # No CUDA is needed to see what each domain's loader is asked for: a fake build_loader
    # records it. (tests/test_gpu.py checks on a GPU that a pinned stream gives the CPU values.)
    import gandist.data.loader as loader

    asked: dict[str, bool] = {}

    def fake_build_loader(cfg: Any, **kwargs: Any) -> list[dict[str, Any]]:
        asked[Path(cfg.shards).name] = kwargs["pinned_images"]
        return []

    monkeypatch.setattr(loader, "build_loader", fake_build_loader)
    cfg = load_config("configs/cyclegan.yaml", cyclegan_overrides(tmp_path, glyph_domains))
    stream = _bound_cyclegan(cfg, torch.device(device)).build_stream(
        batch_size=4, rank=0, world_size=1, seed=0, reduce_sum=lambda t: t
    )
    assert isinstance(stream, UnpairedStream)
    expected = torch.device(device) if device == "cuda" else None
    assert stream.a.device == stream.b.device == expected
    stream.a._build_loader()
    stream.b._build_loader()
    assert asked == {"a": device == "cuda", "b": device == "cuda"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_unpaired_stream_gives_both_domains_on_the_gpu_equal_to_the_cpu_stream(
    glyph_domains: Path,
) -> None:
    from gandist.data.config import DataConfig

    cfg = DataConfig(
        shards=str(glyph_domains / "a"), shards_b=str(glyph_domains / "b"), num_workers=0,
        shuffle_buffer=16,
    )  # fmt: skip
    common = {"batch_size": 4, "rank": 0, "world_size": 1, "seed": 3}
    on_cpu = UnpairedStream(cfg, **common)
    on_gpu = UnpairedStream(cfg, **common, device=torch.device("cuda"))
    for _ in range(3):
        expected, batch = on_cpu.next_batch(), on_gpu.next_batch()
        for domain in ("a", "b"):
            assert batch[domain]["image"].device.type == "cuda"
            assert torch.equal(batch[domain]["image"].cpu(), expected[domain]["image"])
    assert on_gpu.state_dict() == on_cpu.state_dict()


# ---- evaluation ----------------------------------------------------------------------------


class _Swap(nn.Module):
    """A 'translator' that swaps the colour channels, and back: its cycle is exact."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flip(1)


def test_translation_evaluator_scores_both_directions_cycle_and_kept_classes(
    tmp_path: Path, glyph_domains: Path
) -> None:
    from gandist.data.config import DataConfig
    from gandist.metrics.config import EvalConfig
    from gandist.metrics.domain import ImageClassifier, save_classifier
    from gandist.metrics.sharded import Ranks, SampleFormat
    from gandist.metrics.translation import TranslationEvaluator, source_samples
    from gandist.models.cyclegan import TranslatorPair

    torch.manual_seed(0)
    classifier = ImageClassifier(3, 32, 10, width=8, feature_dim=16).eval()
    weights = save_classifier(classifier, tmp_path / "classifier.pt")
    data = DataConfig(shards=str(glyph_domains / "a"), shards_b=str(glyph_domains / "b"))
    cfg = EvalConfig(
        num_samples=40, num_real=40, batch_size=16, extractor="gandist-domain",
        weights_path=str(weights), kid_subset_size=10, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    evaluator = TranslationEvaluator(cfg, data)
    pair = TranslatorPair(_Swap(), _Swap())
    values = evaluator.evaluate(pair)
    assert values["eval/num_samples"] == values["eval/num_samples_ba"] == 40
    assert values["eval/cycle_l1"] == pytest.approx(0.0, abs=1e-6)
    assert values["eval/cycle_l1_ba"] == pytest.approx(0.0, abs=1e-6)
    assert values["eval/fid"] > 0 and values["eval/fid_ba"] > 0
    # Kept classes: the classifier's own accuracy on the swapped inputs, label by label.
    for domain, suffix in (("a", ""), ("b", "_ba")):
        fmt = SampleFormat("image", 32, 3)
        samples = list(source_samples(str(glyph_domains / domain), fmt, 40, Ranks.current()))
        images = torch.stack([s[1] for s in samples]).float() / 127.5 - 1
        labels = torch.tensor([s[2] for s in samples])
        assert (labels >= 0).all()
        with torch.no_grad():
            predicted = classifier(images.flip(1))[1].argmax(1)
        expected = float((predicted == labels).float().mean())
        assert values[f"eval/class_kept{suffix}"] == pytest.approx(expected)


def test_bench_families_times_cyclegan_counting_a_batch_of_each_domain(
    capsys: pytest.CaptureFixture,
) -> None:
    from gandist.bench.families import DEFAULT_CONFIGS, worker

    assert "configs/cyclegan.yaml" in DEFAULT_CONFIGS
    tiny = ["train.batch_size=2", "model.g_width=4", "model.d_width=4", "model.res_blocks=1"]
    # One process, so no process group: the table comes from this process.
    args = ["--steps", "2", "--warmup", "0", "--configs", "configs/cyclegan.yaml"]
    worker([*args, "--overrides", *tiny])
    lines = capsys.readouterr().out.splitlines()
    (row,) = [line.split() for line in lines if line.startswith("cyclegan ")]
    _, model, _, batch, d_phases, step_s, g_per_s, d_per_s = row
    assert (model, int(batch), int(d_phases)) == ("cyclegan", 2, 1)
    # A step reads a batch of each domain (4 real images) and translates each (4 fakes).
    rounding = 0.0005 / float(step_s) + 0.05 / float(d_per_s) + 0.001
    assert float(d_per_s) * float(step_s) == pytest.approx(4, rel=rounding)
    assert float(g_per_s) == float(d_per_s)
    assert lines[-1].startswith("cyclegan: batch per domain")


@pytest.mark.slow
def test_short_cpu_run_changes_the_style_and_keeps_the_class(tmp_path: Path) -> None:
    """After a short run, A -> B images take B's colours and a digit classifier still reads
    the input's digit in them clearly more often than chance (1 in 10)."""
    from accelerate.state import AcceleratorState

    from gandist.metrics.domain import train_classifier
    from gandist.metrics.translation import TranslationEvaluator
    from gandist.training.trainer import Trainer

    domains = tmp_path / "domains"
    gandist_cli(
        "data", "synth", "glyph-domains", "--out", str(domains), "--num", "600",
        "--num-b", "500", "--shard-size", "100", "--workers", "1", "--quiet",
    )  # fmt: skip
    report = train_classifier(
        f"{domains / 'a'}::{domains / 'b'}", tmp_path / "digits.pt", steps=300, progress=False
    )
    assert report["val_accuracy"] > 0.6, report
    cfg = load_config(
        "configs/cyclegan.yaml",
        cyclegan_overrides(
            tmp_path / "run", domains, **{
                "model.g_width": 8, "model.d_width": 8, "model.res_blocks": 2,
                "train.steps": 150, "train.batch_size": 8, "train.log_every": 50,
                "train.sample_every": 150, "train.checkpoint_every": 150,
                "optim.g_lr": 1e-3, "optim.d_lr": 1e-3, "optim.lr_schedule": "constant",
            },
        ),
    )  # fmt: skip
    trainer = Trainer(cfg)
    trainer.train()
    AcceleratorState._reset_state(reset_partial_state=True)
    evaluator = TranslationEvaluator(
        load_config(
            "configs/cyclegan.yaml",
            cyclegan_overrides(
                tmp_path / "run", domains, **{
                    "eval.extractor": "gandist-domain", "eval.weights_path": tmp_path / "digits.pt",
                    "eval.num_samples": 200, "eval.num_real": 200, "eval.kid_subset_size": 50,
                    "eval.cache_dir": tmp_path / "cache",
                },
            ),
        ).eval,
        cfg.data,
    )  # fmt: skip
    pair = trainer.algorithm.eval_generator()
    values = evaluator.evaluate(pair)
    assert values["eval/class_kept"] > 0.4, values
    assert values["eval/class_kept_ba"] > 0.4, values
    # The style moved: A -> B images are nearer B's mean colour than A's.
    real_a, real_b = trainer.algorithm.fixed_inputs()
    with torch.no_grad():
        a_to_b = pair(real_a, "ab")
    colour = {name: x.mean(dim=(0, 2, 3)) for name, x in (("a", real_a), ("b", real_b))}
    moved = a_to_b.mean(dim=(0, 2, 3))
    assert (moved - colour["b"]).norm() < (moved - colour["a"]).norm(), (moved, colour)
