"""The model section of the config: the family and its widths (the families read it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gandist.errors import require as _require
from gandist.errors import require_finite

# The families whose networks take model.attention_resolution.
ATTENTION_FAMILIES = ("biggan",)


@dataclass
class ModelConfig:
    name: str = "dcgan"
    """Model family from the registry (`gandist config` lists them in errors)."""
    latent_dim: int = 100
    """Size of the generator's input noise vector z."""
    g_width: int = 64
    """Generator base width (channels of its last hidden layer, or hidden units for MLPs)."""
    d_width: int = 64
    """Discriminator base width."""
    num_classes: int = 0
    """Classes of a class-conditional family (conditional, biggan, conditional-wavegan); 0 = taken from the shards' manifest for those, and 0 for unconditional families."""
    mapping_layers: int = 8
    """stylegan2: depth of the mapping network z -> w."""
    style_mixing_prob: float = 0.9
    """stylegan2: probability that a training batch mixes the styles of two latents."""
    attention_resolution: int = 0
    """biggan: feature-map side at which G and D get a self-attention block (SAGAN's; 64 at 128 px in the paper), one of the sizes both networks have (8 and 16 at 32 px); 0 = none."""
    res_blocks: int = 9
    """cyclegan: residual blocks of the ResNet translator (the paper: 6 at 128 px, 9 at 256 px and above)."""
    audio_length: int = 16384
    """wavegan: samples per generated clip, 16384 (1.02 s at 16 kHz), 65536 (4.1 s, one more layer in G and D) or 4096 (0.26 s, one fewer: short CPU runs); must equal data.length."""
    phase_shuffle: int = 2
    """wavegan: D shifts each layer's activations by a random -n..n samples (reflect padding) so it cannot key on G's periodic artefacts; 0 disables it."""
    minibatch_stddev: int = 0
    """dcgan: group size of a minibatch-standard-deviation channel before D's last layer (StyleGAN's remedy for mode collapse; its D always has one, of 4); 0 = none."""
    num_discriminators: int = 1
    """Discriminators trained against G (train.algorithm=adversarial), a remedy for mode collapse: D and G losses average over them; more than 1 is model.multi_d."""
    multi_d: Literal["scales", "ensemble"] = "scales"
    """With model.num_discriminators > 1: `scales` (discriminator_k sees the input average-pooled 2^k times: full, half, ... resolution; images only) or `ensemble` (every D at full resolution, each its own initialisation)."""

    def __post_init__(self) -> None:
        _require(
            self.phase_shuffle >= 0, f"model.phase_shuffle must be >= 0, got {self.phase_shuffle}"
        )
        require_finite(self, "model")
        _require(self.latent_dim >= 1, f"model.latent_dim must be >= 1, got {self.latent_dim}")
        _require(self.g_width >= 1, f"model.g_width must be >= 1, got {self.g_width}")
        _require(self.d_width >= 1, f"model.d_width must be >= 1, got {self.d_width}")
        _require(
            self.num_discriminators >= 1,
            f"model.num_discriminators must be >= 1, got {self.num_discriminators}",
        )
        _require(self.num_classes >= 0, f"model.num_classes must be >= 0, got {self.num_classes}")
        _require(
            self.mapping_layers >= 1,
            f"model.mapping_layers must be >= 1, got {self.mapping_layers}",
        )
        _require(
            self.attention_resolution >= 0,
            f"model.attention_resolution must be >= 0 (0 = no self-attention), got "
            f"{self.attention_resolution}",
        )
        _require(
            self.attention_resolution == 0 or self.name in ATTENTION_FAMILIES,
            f"model.attention_resolution={self.attention_resolution} applies to model.name in "
            f"{list(ATTENTION_FAMILIES)}, not {self.name}: set it to 0",
        )
        _require(
            self.minibatch_stddev >= 0,
            f"model.minibatch_stddev must be >= 0 (0 = none), got {self.minibatch_stddev}",
        )
        _require(
            self.minibatch_stddev == 0 or self.name == "dcgan",
            f"model.minibatch_stddev={self.minibatch_stddev} applies to model.name=dcgan "
            f"(stylegan2's D always has one), not {self.name}: set it to 0",
        )
        _require(self.res_blocks >= 1, f"model.res_blocks must be >= 1, got {self.res_blocks}")
        _require(
            0.0 <= self.style_mixing_prob <= 1.0,
            f"model.style_mixing_prob must be in [0, 1], got {self.style_mixing_prob}",
        )
