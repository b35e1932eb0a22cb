"""Every registered family builds, maps latents to images of the right shape, and D to logits [B]."""

from __future__ import annotations

import pytest
import torch

from gandist.errors import ConfigError
from gandist.models import generate
from gandist.models.config import ModelConfig
from gandist.registry import MODELS
from gandist.runs.sample import class_labels
from gandist.training.config import load_config

FAMILY_CONFIGS = [
    "dcgan", "dcgan64", "conditional", "wgan", "wgan-gp", "sngan", "biggan", "stylegan2", "mlp",
]  # fmt: skip
AUDIO_CONFIGS = ["wavegan", "conditional-wavegan"]  # shapes and training: tests/test_wavegan.py


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Like the launched ranks: on a 2-core machine shared with others, more threads run slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _build(cfg: ModelConfig, resolution: int, channels: int):
    torch.manual_seed(0)
    return MODELS.get(cfg.name)(cfg, resolution, channels)


TRANSLATOR_CONFIGS = ["cyclegan"]  # image-to-image families: shapes in tests/test_cyclegan.py


def test_every_registered_family_has_a_config() -> None:
    configs = FAMILY_CONFIGS + TRANSLATOR_CONFIGS + AUDIO_CONFIGS
    names = {load_config(f"configs/{c}.yaml").model.name for c in configs}
    assert names == set(MODELS.names())


@pytest.mark.parametrize("config", FAMILY_CONFIGS)
def test_family_output_shapes_at_default_config(config: str) -> None:
    cfg = load_config(f"configs/{config}.yaml")
    res, ch = cfg.data.resolution, cfg.data.channels
    generator, discriminator = _build(cfg.model, res, ch)
    assert generator.latent_dim == cfg.model.latent_dim
    z = torch.randn(4, cfg.model.latent_dim)
    labels = class_labels(generator, 4, None)
    assert (labels is not None) == (cfg.model.num_classes > 0)
    images = generate(generator, z, labels)
    assert images.shape == (4, ch, res, res)
    assert torch.isfinite(images).all()
    logits = discriminator(images) if labels is None else discriminator(images, labels)
    assert logits.shape == (4,)
    # Gradients reach every parameter of both networks.
    (logits.sum() + images.sum()).backward()
    for name, param in [*generator.named_parameters(), *discriminator.named_parameters()]:
        if "style" not in name:
            assert param.grad is not None, f"{config}: no gradient for {name}"


@pytest.mark.parametrize("name", ["sngan", "biggan", "stylegan2", "conditional", "wgan-gp"])
def test_family_at_64_px(name: str) -> None:
    cfg = ModelConfig(name=name, latent_dim=16, g_width=4, d_width=4, num_classes=3)
    generator, discriminator = _build(cfg, 64, 1)
    labels = torch.tensor([0, 2]) if getattr(generator, "num_classes", 0) else None
    images = generate(generator, torch.randn(2, 16), labels)
    assert images.shape == (2, 1, 64, 64)
    logits = discriminator(images) if labels is None else discriminator(images, labels)
    assert logits.shape == (2,)


@pytest.mark.parametrize("name", ["conditional", "biggan"])
def test_conditional_generator_output_depends_on_the_label(name: str) -> None:
    cfg = ModelConfig(name=name, latent_dim=16, g_width=4, d_width=4, num_classes=5)
    generator, _ = _build(cfg, 32, 3)
    generator.eval()
    # Move the class-dependent parameters off their zero init so classes differ from step 0.
    with torch.no_grad():
        for pname, param in generator.named_parameters():
            if "gain" in pname or "bias" in pname or "shared" in pname:
                param.normal_(0, 0.5)
    z = torch.randn(1, 16).expand(2, -1)
    images = generator(z, torch.tensor([1, 4]))
    assert not torch.allclose(images[0], images[1])
    assert generator.num_classes == 5


def test_conditional_generator_starts_from_grey_images_not_saturated_noise() -> None:
    """DCGAN's N(0, 0.02) init: PyTorch's default init made a quarter of the first images'
    pixels saturate the tanh (black-and-white noise D rejected at once; G still drew noise
    after 150 steps). Now it starts like dcgan: small, grey, unsaturated images."""
    cfg = load_config("configs/conditional.yaml")
    generator, _ = _build(cfg.model, cfg.data.resolution, 1)
    z = torch.randn(64, cfg.model.latent_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        images = generator(
            z, torch.arange(64) % cfg.model.num_classes
        )  # train mode, as in G's step
    assert (images.abs() > 0.95).float().mean() < 0.01
    assert 0.05 < images.std() < 0.5


def test_conditional_families_build_only_with_num_classes() -> None:
    # A config may leave it 0 (`gandist train` takes it from the shards); building may not.
    for name in ("conditional", "biggan"):
        cfg = load_config(None, [f"model.name={name}"])
        with pytest.raises(ConfigError, match="model.num_classes"):
            MODELS.get(name)(cfg.model, cfg.data.resolution, cfg.data.channels)


def test_dcgan_minibatch_stddev_lets_d_see_how_alike_the_batch_is() -> None:
    """model.minibatch_stddev=4: D's logit for one image depends on the other images of its
    group (the spread a collapsed G cannot fake); without it (BN in eval mode) it does not."""
    images = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    alike = images.clone()
    alike[2::2] = images[0]  # StyleGAN's groups are strided: 0, 2, 4, 6 is one, as one image
    for group, depends in ((0, False), (4, True)):
        cfg = load_config(None, ["model.d_width=8", f"model.minibatch_stddev={group}"]).model
        _, discriminator = _build(cfg, 32, 1)
        discriminator.eval()
        with torch.no_grad():
            before, after = discriminator(images), discriminator(alike)
        assert ((before[0] - after[0]).abs() > 1e-6) == depends, (group, before[0], after[0])
        assert (before[1::2] == after[1::2]).all()  # the other group: 1, 3, 5, 7


def test_minibatch_stddev_is_refused_for_families_other_than_dcgan() -> None:
    with pytest.raises(ConfigError, match=r"model.minibatch_stddev=4 applies to model.name=dcgan"):
        load_config(None, ["model.name=sngan", "model.minibatch_stddev=4"])
    with pytest.raises(ConfigError, match=r"model.minibatch_stddev must be >= 0"):
        load_config(None, ["model.minibatch_stddev=-1"])


def test_biggan_latent_too_small_for_its_chunks() -> None:
    with pytest.raises(ConfigError, match="chunks"):
        load_config(None, ["model.name=biggan", "model.num_classes=2", "model.latent_dim=3"])


def test_stylegan2_mixing_and_mapping() -> None:
    cfg = ModelConfig(name="stylegan2", latent_dim=8, g_width=4, d_width=4, mapping_layers=2)
    generator, _ = _build(cfg, 16, 3)
    ws = generator.mapping(torch.randn(3, 8))
    assert ws.shape == (3, generator.num_ws, 8)
    # Layers past a cutoff take another w: a mixed batch differs from an unmixed one.
    torch.manual_seed(1)
    z = torch.randn(2, 8)
    generator.eval()
    unmixed = generator(z)
    generator.style_mixing_prob = 1.0
    mixed = generator.synthesis(generator._mix_styles(z, generator.mapping(z)))
    assert not torch.allclose(unmixed, mixed)
    # Eval mode does not mix styles: the same latents give the same images.
    assert torch.equal(generator(z), unmixed)


def test_stylegan2_eval_mode_uses_its_fixed_noise_and_training_fresh_noise() -> None:
    cfg = ModelConfig(name="stylegan2", latent_dim=8, g_width=4, d_width=4, mapping_layers=2)
    generator, _ = _build(cfg, 16, 3)
    generator.style_mixing_prob = 0.0
    layers = [m for m in generator.modules() if hasattr(m, "noise_const")]
    assert len(layers) >= 2
    with torch.no_grad():
        for layer in layers:  # noise strength starts at 0; turn the noise on
            layer.noise_strength.fill_(0.5)
    z = torch.randn(2, 8)
    with torch.no_grad():
        generator.train()
        assert not torch.allclose(generator(z), generator(z))  # fresh noise every call
        generator.eval()
        fixed = generator(z)
        assert torch.equal(generator(z), fixed)
        for layer in layers:  # the eval output is made with the stored noise
            layer.noise_const.normal_()
        assert not torch.allclose(generator(z), fixed)


def test_sample_class_labels() -> None:
    cfg = ModelConfig(name="conditional", latent_dim=8, g_width=4, d_width=4, num_classes=3)
    generator, _ = _build(cfg, 16, 3)
    assert class_labels(generator, 5, None).tolist() == [0, 1, 2, 0, 1]
    assert class_labels(generator, 3, 2).tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        class_labels(generator, 3, 3)
    dcgan, _ = _build(ModelConfig(name="dcgan", latent_dim=8, g_width=4, d_width=4), 16, 3)
    assert class_labels(dcgan, 4, None) is None
    with pytest.raises(ValueError, match="unconditional"):
        class_labels(dcgan, 4, 1)


def test_stylegan2_up_convolution_is_fir_upsampling_then_the_modulated_conv() -> None:
    from gandist.models.filters import downsample2d, setup_filter, upsample2d
    from gandist.models.stylegan2 import EqualConv2d, ModulatedConv2d

    torch.manual_seed(0)
    conv = ModulatedConv2d(4, 5, 3, w_dim=8, demodulate=False, up=2)
    with torch.no_grad():  # every style 1: the modulated conv is a plain conv
        conv.affine.weight.zero_()
    x = torch.randn(2, 4, 6, 6)
    out = conv(x, torch.randn(2, 8))
    weight = conv.weight * conv.weight_gain
    direct = torch.nn.functional.conv2d(upsample2d(x, setup_filter()), weight, padding=1)
    assert out.shape == direct.shape == (2, 5, 12, 12)
    assert torch.allclose(out[..., 2:-2, 2:-2], direct[..., 2:-2, 2:-2], atol=1e-5)
    # D's down-sampling conv: the conv, then FIR low-pass and decimation.
    down = EqualConv2d(4, 5, 3, down=2)
    with torch.no_grad():
        down.bias.normal_()
        out = down(x)
        direct = downsample2d(
            torch.nn.functional.conv2d(x, down.weight * down.weight_gain, padding=1), setup_filter()
        )
    assert torch.allclose(out[..., 1:-1, 1:-1], direct[..., 1:-1, 1:-1] + down.bias[:, None, None])


def test_stylegan2_resamples_with_the_fir_filter_in_every_resampling_layer() -> None:
    from gandist.models.filters import setup_filter

    cfg = ModelConfig(name="stylegan2", latent_dim=8, g_width=4, d_width=4, mapping_layers=2)
    generator, discriminator = _build(cfg, 32, 3)
    g_filters = [k for k in generator.state_dict() if k.endswith("resample_filter")]
    d_filters = [k for k in discriminator.state_dict() if k.endswith("resample_filter")]
    # 8, 16, 32 px: three up-sampling convs and the RGB skip; D: two per halving block (3).
    assert len(g_filters) == 4 and len(d_filters) == 6
    for key in g_filters:
        assert torch.equal(generator.state_dict()[key], setup_filter())
    assert not any(
        isinstance(m, torch.nn.Upsample | torch.nn.AvgPool2d) for m in generator.modules()
    )


def test_weights_of_an_older_stylegan2_are_refused_in_one_line(tmp_path) -> None:
    from gandist.checkpoint import load_checkpoint

    cfg = ModelConfig(name="stylegan2", latent_dim=8, g_width=4, d_width=4, mapping_layers=2)
    generator, _ = _build(cfg, 16, 3)
    # Before FIR resampling, StyleGAN2's weights held no resample_filter buffers.
    older = {k: v for k, v in generator.state_dict().items() if "resample_filter" not in k}
    with pytest.raises(ConfigError, match=r"lack 3 tensors .*resample_filter.* older gandist"):
        generator.load_state_dict(older)
    # The same one line when a resume loads them as a checkpoint component.
    torch.save({"format": {}, "generator": older}, tmp_path / "state.pt")
    with pytest.raises(ConfigError, match="lack 3 tensors .*resample_filter") as err:
        load_checkpoint(tmp_path, 0, {"generator": generator}, {})
    assert "\n" not in str(err.value)
    generator.load_state_dict(generator.state_dict())  # its own weights load


def test_resuming_an_older_stylegan2_run_ends_in_one_line_not_a_traceback(
    tmp_path, glyph_shards, capsys: pytest.CaptureFixture[str]
) -> None:
    from accelerate.state import AcceleratorState

    from gandist import checkpoint, rundir, train
    from tests.conftest import tiny_overrides

    run_dir = tmp_path / "run"
    tiny = {"model.mapping_layers": 2, "train.steps": 2, "tracking.wandb": False}
    args = ["configs/stylegan2.yaml", *tiny_overrides(run_dir, glyph_shards, **tiny)]
    assert train.main(args) == 0
    # Make its checkpoint what an older gandist wrote: no FIR filters in the networks.
    state_file = rundir.latest_checkpoint(run_dir) / checkpoint.SHARED_FILE
    state = torch.load(state_file, weights_only=True)
    for key, value in state.items():
        if key.startswith("network/") or key == "ema":
            state[key] = {k: v for k, v in value.items() if "resample_filter" not in k}
    torch.save(state, state_file)
    AcceleratorState._reset_state(reset_partial_state=True)
    capsys.readouterr()
    assert train.main([*args, "train.steps=4", "resume=latest"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("gandist: error: cannot load these model.name=stylegan2 StyleGAN2")
    assert err.count("\n") == 1 and "resample_filter" in err
