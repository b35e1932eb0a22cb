"""GAN families, one module each; `MODELS` (gandist.registry) imports them on first lookup.

Every builder has the signature `build(cfg: ModelConfig, resolution, channels) -> (G, D)`:
`G(z)` maps noise [B, latent_dim] to images [B, C, H, W] in [-1, 1], and `D(images)` returns
logits of shape [B]. Audio families (their builder says `kind = "audio"`) make clips
[B, 1, model.audio_length] in [-1, 1] instead, and ignore resolution and channels. Generators expose `latent_dim`. Class-conditional families (their G has
`num_classes` > 0) take labels [B] too: `G(z, labels)` and `D(images, labels)`. A builder may
carry a `validate(cfg, resolution, channels)` attribute that raises ConfigError before any
process starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn


def generate(
    generator: nn.Module,
    latents: torch.Tensor,
    labels: torch.Tensor | None = None,
    truncation: float = 1.0,
) -> torch.Tensor:
    """Images [B, C, H, W] (or clips [B, 1, L]) from latents [B, latent_dim]; class labels [B]
    for conditional models.

    The one place that knows how a generator is called, for grids, evaluation and export.
    `truncation` < 1 applies the truncation trick (gandist.models.truncation).
    """
    if truncation != 1.0:
        from gandist.models.truncation import truncated_generate

        return truncated_generate(generator, latents, labels, truncation)
    if labels is None:
        return generator(latents)
    return generator(latents, labels)
