"""BigGAN's self-attention: the SAGAN block, where it sits, and the config that places it."""

from __future__ import annotations

import pytest
import torch

from gandist.errors import ConfigError
from gandist.models.config import ModelConfig
from gandist.models.layers import SelfAttention
from gandist.registry import MODELS
from gandist.training.config import load_config


def _biggan(attention: int, resolution: int = 32) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    cfg = ModelConfig(
        name="biggan",
        latent_dim=16,
        g_width=4,
        d_width=4,
        num_classes=3,
        attention_resolution=attention,
    )
    return MODELS.get("biggan")(cfg, resolution, 1)


def test_self_attention_keeps_the_shape_and_pools_keys_and_values() -> None:
    block = SelfAttention(16)
    assert (block.key_ch, block.value_ch) == (2, 8)
    x = torch.randn(3, 16, 8, 6)
    assert block(x).shape == (3, 16, 8, 6)
    for conv in (block.theta, block.phi, block.g, block.o):  # spectrally normed, no bias
        assert hasattr(conv, "parametrizations") and conv.bias is None


def test_self_attention_starts_as_the_identity() -> None:
    block = SelfAttention(16)
    assert float(block.gamma.detach()) == 0.0
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(block(x), x)
    with torch.no_grad():
        block.gamma.fill_(0.5)
    assert not torch.allclose(block(x), x)


def test_self_attention_equals_the_softmax_over_pooled_positions_by_hand() -> None:
    torch.manual_seed(0)
    block = SelfAttention(16).eval()  # eval: spectral norm without a power iteration
    with torch.no_grad():
        block.gamma.fill_(0.7)
    x = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        out = block(x)
        theta = block.theta(x).flatten(2)  # [B, 2, 16]
        phi = torch.nn.functional.max_pool2d(block.phi(x), 2).flatten(2)  # [B, 2, 4]
        g = torch.nn.functional.max_pool2d(block.g(x), 2).flatten(2)  # [B, 8, 4]
        expected = torch.empty(2, 8, 16)
        for b in range(2):
            for p in range(16):  # position p reads every pooled position j
                weights = torch.softmax(
                    torch.stack([theta[b, :, p] @ phi[b, :, j] for j in range(4)]), 0
                )
                expected[b, :, p] = sum(weights[j] * g[b, :, j] for j in range(4))
        expected = x + 0.7 * block.o(expected.view(2, 8, 4, 4))
    assert torch.allclose(out, expected, atol=1e-5)


def test_self_attention_reaches_across_the_whole_map() -> None:
    torch.manual_seed(0)
    block = SelfAttention(16)
    with torch.no_grad():
        block.gamma.fill_(1.0)
    x = torch.randn(1, 16, 8, 8)
    moved = x.clone()
    moved[..., 0, 0] += 5.0  # one corner
    with torch.no_grad():
        far = (block(moved) - block(x))[..., 7, 7]  # the other corner
    assert far.abs().max() > 1e-4


@pytest.mark.parametrize("attention", [8, 16])
def test_biggan_places_one_attention_block_at_the_asked_resolution(attention: int) -> None:
    generator, discriminator = _biggan(attention)
    seen: dict[str, tuple[int, ...]] = {}
    for name, net in (("g", generator), ("d", discriminator)):
        assert sum(isinstance(m, SelfAttention) for m in net.modules()) == 1
        net.attention.register_forward_hook(
            lambda _m, args, _out, name=name: seen.__setitem__(name, tuple(args[0].shape))
        )
    labels = torch.tensor([0, 2])
    images = generator(torch.randn(2, 16), labels)
    assert discriminator(images, labels).shape == (2,)
    assert seen["g"][2:] == (attention, attention) and seen["d"][2:] == (attention, attention)
    # The orthogonal regulariser covers its four convolutions too, as in BigGAN's code.
    plain_g, _ = _biggan(0)
    assert len(generator.regularized_weights()) == len(plain_g.regularized_weights()) + 4


def test_biggan_without_attention_keeps_the_older_weight_names() -> None:
    # attention_resolution=0 (the default) adds no tensors: older BigGAN runs still load.
    generator, discriminator = _biggan(0)
    assert not any(isinstance(m, SelfAttention) for m in generator.modules())
    assert not any("attention" in k for k in [*generator.state_dict(), *discriminator.state_dict()])
    with_attention, _ = _biggan(16)
    with pytest.raises(ConfigError, match=r"lack 13 tensors .*attention\.gamma"):
        with_attention.load_state_dict(generator.state_dict())


def test_biggan_with_attention_at_init_draws_what_it_draws_without() -> None:
    generator, _ = _biggan(0)
    with_attention, _ = _biggan(16)
    with_attention.load_state_dict(generator.state_dict(), strict=False)  # gamma stays 0
    generator.eval(), with_attention.eval()
    z, labels = torch.randn(2, 16), torch.tensor([1, 2])
    with torch.no_grad():
        assert torch.allclose(with_attention(z, labels), generator(z, labels))


def test_a_resolution_the_networks_lack_is_refused_in_one_line() -> None:
    message = (
        r"model.attention_resolution=32 is not a feature-map size that both BigGAN networks "
        r"have at data.resolution=32: choose one of \[8, 16\], or 0 for no self-attention"
    )
    with pytest.raises(ConfigError, match=message):
        load_config("configs/biggan.yaml", ["model.attention_resolution=32"])
    with pytest.raises(ConfigError, match="choose one of"):
        _biggan(4)
    with pytest.raises(ConfigError, match=r"applies to model.name in \['biggan'\], not dcgan"):
        load_config(None, ["model.attention_resolution=16"])
    assert load_config("configs/biggan.yaml", ["model.attention_resolution=16"])
