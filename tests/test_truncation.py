"""The truncation trick: psi=1 changes nothing, psi=0 collapses to the mean, for style-based and
latent-truncated generators, in `gandist sample`, evaluation latents and training grids."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gandist import cli
from gandist.errors import ConfigError
from gandist.metrics.sharded import evaluation_latents
from gandist.models import generate
from gandist.models.config import ModelConfig
from gandist.models.truncation import mean_w, truncate_latents
from gandist.registry import MODELS
from gandist.training.config import load_config
from gandist.training.trainer import Trainer
from tests.conftest import tiny_overrides


def build(name: str) -> torch.nn.Module:
    cfg = ModelConfig(name=name, latent_dim=16, g_width=8, d_width=8, mapping_layers=2)
    torch.manual_seed(0)
    generator, _ = MODELS.get(name)(cfg, 16, 1)
    return generator.eval()


@pytest.mark.parametrize("name", ["stylegan2", "dcgan"])
@torch.no_grad()
def test_psi_one_leaves_samples_unchanged_and_psi_zero_collapses_to_the_mean(name: str) -> None:
    generator = build(name)
    z = torch.randn(6, 16, generator=torch.Generator().manual_seed(3))
    plain = generate(generator, z)
    assert torch.equal(generate(generator, z, truncation=1.0), plain)
    collapsed = generate(generator, z, truncation=0.0)
    assert torch.allclose(collapsed, collapsed[:1].expand_as(collapsed), atol=1e-6)
    if name == "stylegan2":  # the mean is the image of the mean w, not of the mean z
        mean_image = generator.synthesis(mean_w(generator, 16)[None])
        assert torch.allclose(collapsed[:1], mean_image, atol=1e-5)
    else:
        assert torch.allclose(collapsed[:1], generator(torch.zeros(1, 16)), atol=1e-6)
    halfway = generate(generator, z, truncation=0.5)
    assert not torch.allclose(halfway, plain) and not torch.allclose(halfway, collapsed)


def test_style_truncation_moves_each_w_towards_the_mean_by_psi() -> None:
    generator = build("stylegan2")
    z = torch.randn(4, 16)
    captured = []
    synthesis = generator.synthesis
    generator.synthesis = lambda ws: captured.append(ws) or synthesis(ws)  # type: ignore
    with torch.no_grad():
        generate(generator, z, truncation=0.7)
        w_avg, ws = mean_w(generator, 16), generator.mapping(z)
    assert torch.allclose(captured[0], w_avg + 0.7 * (ws - w_avg), atol=1e-5)


def test_latent_truncation_resamples_only_out_of_range_coordinates() -> None:
    z = torch.randn(2000, 16, generator=torch.Generator().manual_seed(1))
    psi = 0.7
    threshold = math.sqrt(2) * torch.erfinv(torch.tensor(psi)).item()  # ~1.036
    out = truncate_latents(z, psi, seed=5)
    inside = z.abs() <= threshold
    assert torch.equal(out[inside], z[inside])
    assert out.abs().max() <= threshold + 1e-6
    assert not torch.equal(out[~inside], z[~inside].clamp(-threshold, threshold))
    assert torch.equal(truncate_latents(z, 1.0), z)
    with pytest.raises(ValueError, match=r"--truncation must be in \[0, 1\].*got 1.5"):
        truncate_latents(z, 1.5)


def test_evaluation_latents_are_truncated_as_one_set() -> None:
    from gandist.metrics.sharded import Ranks, generated_features

    # The resampled values of two batches differ: truncation happens before the split.
    generator = build("dcgan")
    seen: list[torch.Tensor] = []
    forward = generator.forward
    generator.forward = lambda z: seen.append(z) or forward(z)  # type: ignore

    import gandist.metrics.sharded as sharded

    originals = sharded.extract, sharded.gather_in_order
    sharded.extract = lambda extractor, batches, device: list(batches)  # type: ignore
    sharded.gather_in_order = lambda ranks, mine, out: out  # type: ignore
    try:
        generated_features(
            generator,
            None,
            Ranks(0, 1, torch.device("cpu")),
            num=8,
            latent_dim=16,
            batch_size=4,
            seed=0,
            truncation=0.5,
        )
    finally:
        sharded.extract, sharded.gather_in_order = originals
    full, _ = evaluation_latents(8, 16, 0, 0)
    assert torch.equal(torch.cat(seen), truncate_latents(full, 0.5, 0))


def test_eval_truncation_out_of_range_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="eval.truncation"):
        load_config(None, [f"output_dir={tmp_path}", "eval.truncation=-0.1"])


def test_grids_and_gandist_sample_truncate_when_asked(tmp_path: Path, glyph_shards: Path) -> None:
    run_dir = tmp_path / "run"
    extra = {"tracking.wandb": False, "train.steps": 2, "eval.truncation": 0.0}
    trainer = Trainer(load_config(None, tiny_overrides(run_dir, glyph_shards, **extra)))
    trainer.train()
    grid = trainer.algorithm.sample()["samples"]
    assert torch.allclose(grid, grid[:1].expand_as(grid), atol=1e-6)  # psi=0: one image

    out = tmp_path / "t.png"
    assert (
        cli.main(["sample", str(run_dir), "--num", "4", "--truncation", "0.7", "--out", str(out)])
        == 0
    )
    assert out.stat().st_size > 0
    assert cli.main(["sample", str(run_dir), "--truncation", "2", "--out", str(out)]) == 2
