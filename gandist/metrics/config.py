"""The eval section of the config: FID/KID/IS during training and in `gandist eval`."""

from __future__ import annotations

from dataclasses import dataclass

from gandist.errors import require as _require
from gandist.errors import require_finite


@dataclass
class EvalConfig:
    every: int = 0
    """Steps between FID/KID/IS evaluations during training; 0 turns evaluation off (unless every_images is set)."""
    every_images: int = 0
    """Alternative to eval.every: evaluate each time the global images seen (`train/images_seen`: batch_size x n_critic per step) cross a multiple of this; 0 = off."""
    num_samples: int = 10000
    """Generated samples scored per evaluation, split across ranks."""
    num_real: int = 10000
    """Real samples in the reference statistics (the first ones of the sorted shards, or all)."""
    batch_size: int = 64
    """Samples per batch on each rank, fixed so numbers do not depend on the number of ranks."""
    extractor: str = "inception-v3-compat"
    """torch-fidelity feature extractor: inception-v3-compat, or gandist-domain (a trained image or audio classifier; the one for data.kind=audio)."""
    weights_path: str | None = None
    """Local weights file of the extractor: InceptionV3 weights on offline clusters, or the file of `gandist metrics train-extractor` (required for gandist-domain)."""
    kid_subsets: int = 100
    """KID subsets (torch-fidelity's kid_subsets)."""
    kid_subset_size: int = 1000
    """KID subset size; lowered to the smaller sample count when fewer samples are scored."""
    isc_splits: int = 10
    """Inception Score splits (torch-fidelity's isc_splits)."""
    seed: int = 0
    """Seed of the evaluation latents: every evaluation scores the same latents."""
    max_share: float = 0.1
    """Largest share of wall-clock time evaluation may take; a due evaluation is postponed until it fits (1 disables the guard)."""
    cache_dir: str | None = None
    """Folder of cached reference statistics; default `$XDG_CACHE_HOME/gandist/metrics` (~/.cache)."""
    keep_best: bool = True
    """Keep a `best` generator checkpoint (lowest FID) in the run directory."""
    precision_recall: bool = False
    """Also score precision and recall (Kynkaanniemi et al., 2019; torch-fidelity `prc`): the share of samples inside the real manifold, and of reals inside the samples' one; k-NN distances cost O(num_samples x num_real)."""
    prc_neighborhood: int = 3
    """k of the k-nearest-neighbour balls that estimate each manifold (3 in the paper)."""
    truncation: float = 1.0
    """Truncation trick psi for evaluation scores and training sample grids: 1 off, 0.7 usual (towards the mean w for style-based G, resampled out-of-range z for the others)."""

    def __post_init__(self) -> None:
        require_finite(self, "eval")
        _require(self.every >= 0, f"eval.every must be >= 0 (0 = off), got {self.every}")
        _require(
            self.every_images >= 0,
            f"eval.every_images must be >= 0 (0 = off), got {self.every_images}",
        )
        _require(
            not (self.every > 0 and self.every_images > 0),
            f"eval.every={self.every} and eval.every_images={self.every_images} are both set; "
            "evaluate by steps or by images: set the other one to 0",
        )
        for key in ("num_samples", "num_real"):  # FID's covariance and KID need two or more
            value = getattr(self, key)
            _require(value >= 2, f"eval.{key} must be >= 2 (FID and KID compare sets), got {value}")
        _require(self.seed >= 0, f"eval.seed must be >= 0, got {self.seed}")
        for key in ("batch_size", "kid_subsets", "kid_subset_size", "prc_neighborhood"):
            value = getattr(self, key)
            _require(value >= 1, f"eval.{key} must be >= 1, got {value}")
        _require(self.isc_splits >= 1, f"eval.isc_splits must be >= 1, got {self.isc_splits}")
        _require(
            0.0 <= self.truncation <= 1.0,
            f"eval.truncation must be in [0, 1] (1: off, 0.7 is usual), got {self.truncation}",
        )
        _require(
            0.0 < self.max_share <= 1.0, f"eval.max_share must be in (0, 1], got {self.max_share}"
        )

    @property
    def enabled(self) -> bool:
        """Whether training evaluates (eval.every or eval.every_images > 0)."""
        return self.every > 0 or self.every_images > 0
