"""GAN families, one module each; importing this package registers them in `MODELS`.

Every builder has the signature `build(cfg: ModelConfig, resolution, channels) -> (G, D)`:
`G(z)` maps noise [B, latent_dim] to images [B, C, H, W] in [-1, 1], and `D(images)` returns
logits of shape [B]. Generators expose `latent_dim`. Class-conditional families (their G has
`num_classes` > 0) take labels [B] too: `G(z, labels)` and `D(images, labels)`. A builder may
carry a `validate(cfg, resolution, channels)` attribute that raises ConfigError before any
process starts.
"""

from gandist.models import biggan, conditional, dcgan, mlp, sngan, stylegan2, wgan

__all__ = ["biggan", "conditional", "dcgan", "mlp", "sngan", "stylegan2", "wgan"]
