"""The truncation trick: trade variety for quality at sampling time, never during training.

psi in [0, 1]; psi=1 leaves every sample unchanged, psi=0 collapses all of them to the mean.
- Style-based generators (a `mapping` and a `synthesis` network, StyleGAN): each w moves
  towards the mean w, w_avg + psi * (w - w_avg) (Karras et al., 2019). w_avg is estimated from
  W_AVG_SAMPLES latents of a fixed seed, so the same generator always gets the same mean.
- Every other generator: latent coordinates outside [-t, t] are resampled from the normal
  truncated to [-t, t] (BigGAN), where t keeps the central fraction psi of the normal's mass
  (t = Phi^-1((1 + psi) / 2)); the coordinates inside are kept, so psi=1 changes nothing.
"""

from __future__ import annotations

import math

import torch
from torch import nn

W_AVG_SAMPLES = 4096
W_AVG_SEED = 0x5EED


def check_psi(psi: float, key: str = "--truncation") -> None:
    if not (0.0 <= psi <= 1.0 and math.isfinite(psi)):
        raise ValueError(f"{key} must be in [0, 1] (1: no truncation, 0.7 is usual), got {psi}")


def is_style_based(generator: nn.Module) -> bool:
    return hasattr(generator, "mapping") and hasattr(generator, "synthesis")


@torch.no_grad()
def mean_w(generator: nn.Module, latent_dim: int) -> torch.Tensor:
    """The mean of `generator.mapping` over W_AVG_SAMPLES fixed latents: [num_ws, w_dim]."""
    device = next(generator.parameters()).device
    z = torch.randn(W_AVG_SAMPLES, latent_dim, generator=torch.Generator().manual_seed(W_AVG_SEED))
    return torch.cat([generator.mapping(chunk.to(device)) for chunk in z.split(512)]).mean(0)


def truncate_latents(latents: torch.Tensor, psi: float, seed: int = 0) -> torch.Tensor:
    """Latents [B, D] with every coordinate outside [-t, t] resampled inside it (see above)."""
    check_psi(psi)
    if psi >= 1.0:
        return latents
    if psi <= 0.0:
        return torch.zeros_like(latents)
    # Resample by inverting the normal CDF on the kept band of probability mass: exact, one pass.
    uniform = torch.rand(latents.shape, generator=torch.Generator().manual_seed(seed))
    band = (1.0 - psi) / 2 + psi * uniform.double()
    resampled = (math.sqrt(2.0) * torch.erfinv(2 * band - 1)).to(latents)
    threshold = math.sqrt(2.0) * torch.erfinv(torch.tensor(psi, dtype=torch.float64)).item()
    return torch.where(latents.abs() > threshold, resampled.to(latents.device), latents)


def truncated_generate(
    generator: nn.Module, latents: torch.Tensor, labels: torch.Tensor | None, psi: float
) -> torch.Tensor:
    """Images [B, C, H, W] from latents [B, latent_dim] with the truncation trick at `psi`."""
    check_psi(psi)
    if psi < 1.0 and is_style_based(generator) and labels is None:
        w_avg = mean_w(generator, latents.shape[1])
        ws = w_avg.lerp(generator.mapping(latents), psi)
        return generator.synthesis(ws)
    if psi < 1.0:
        latents = truncate_latents(latents, psi)
    return generator(latents) if labels is None else generator(latents, labels)
