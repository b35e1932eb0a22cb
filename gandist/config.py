"""Typed configuration: dataclass defaults, merged with a YAML file and key=value overrides."""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError
from yaml import YAMLError

MixedPrecision = Literal["auto", "fp32", "bf16", "fp16"]
LRSchedule = Literal["constant", "linear", "cosine"]
DataKind = Literal["image", "audio"]
DataMode = Literal["exact", "resampled"]


class ConfigError(ValueError):
    """A problem with the user's configuration; the CLI prints it and exits with code 2."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class DataConfig:
    shards: str = "data/glyphs"
    """Training shards: a folder of .tar files, a file, a brace pattern (`d/train-{000..009}.tar`), `pipe:CMD` or an http(s) URL; `::` joins several."""
    resolution: int = 32
    """Side in pixels the images are resized to if the shards hold another size."""
    channels: int = 3
    """1 for grayscale, 3 for RGB; images are converted on decode."""
    num_workers: int = 2
    """DataLoader worker processes per rank (0 decodes in the training process)."""
    shuffle_buffer: int = 1000
    """Samples held in each worker's shuffle buffer."""
    kind: DataKind = "image"
    """What the shards hold: `image` (batches of [B, C, H, W]) or `audio` (batches of [B, 1, L])."""
    mode: DataMode = "exact"
    """`exact`: each epoch every shard once, split over ranks and workers (needs >= ranks x workers
    shards); `resampled`: shards drawn with replacement, `epoch_batches` batches per rank per epoch."""
    epoch_batches: int = 1000
    """Resampled mode: batches per rank per epoch (rounded up to a multiple of num_workers)."""
    sample_rate: int = 16000
    """Audio: sample rate in Hz the shards were made at; clips at another rate are skipped as bad."""
    length: int = 16384
    """Audio: samples per clip; longer clips are centre-cropped, shorter ones zero-padded."""
    max_bad_fraction: float = 0.05
    """Training stops (on every rank) once more than this fraction of the samples read was bad."""

    def __post_init__(self) -> None:
        _require(self.resolution >= 4, f"data.resolution must be >= 4, got {self.resolution}")
        _require(self.channels in (1, 3), f"data.channels must be 1 or 3, got {self.channels}")
        _require(self.num_workers >= 0, f"data.num_workers must be >= 0, got {self.num_workers}")
        _require(
            self.shuffle_buffer >= 0, f"data.shuffle_buffer must be >= 0, got {self.shuffle_buffer}"
        )
        _require(
            self.epoch_batches >= 1, f"data.epoch_batches must be >= 1, got {self.epoch_batches}"
        )
        _require(self.sample_rate >= 1, f"data.sample_rate must be >= 1 Hz, got {self.sample_rate}")
        _require(self.length >= 16, f"data.length must be >= 16 samples, got {self.length}")
        _require(
            0.0 <= self.max_bad_fraction <= 1.0,
            f"data.max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}",
        )


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
    """Classes of a class-conditional family (conditional, biggan); 0 for unconditional ones."""
    mapping_layers: int = 8
    """stylegan2: depth of the mapping network z -> w."""
    style_mixing_prob: float = 0.9
    """stylegan2: probability that a training batch mixes the styles of two latents."""

    def __post_init__(self) -> None:
        # Imported here: the registry imports model modules, which import this module.
        from gandist.registry import MODELS

        MODELS.check(self.name, "model.name")
        _require(self.latent_dim >= 1, f"model.latent_dim must be >= 1, got {self.latent_dim}")
        _require(self.g_width >= 1, f"model.g_width must be >= 1, got {self.g_width}")
        _require(self.d_width >= 1, f"model.d_width must be >= 1, got {self.d_width}")
        _require(self.num_classes >= 0, f"model.num_classes must be >= 0, got {self.num_classes}")
        _require(
            self.mapping_layers >= 1,
            f"model.mapping_layers must be >= 1, got {self.mapping_layers}",
        )
        _require(
            0.0 <= self.style_mixing_prob <= 1.0,
            f"model.style_mixing_prob must be in [0, 1], got {self.style_mixing_prob}",
        )


@dataclass
class OptimConfig:
    g_lr: float = 2e-4
    """Generator Adam learning rate."""
    d_lr: float = 2e-4
    """Discriminator Adam learning rate."""
    betas: tuple[float, float] = (0.5, 0.999)
    """Adam betas; beta1=0.5 is the DCGAN choice that keeps the adversarial game stable."""
    lr_schedule: LRSchedule = "constant"
    """Both learning rates over train.steps: constant, linear (decay to 0) or cosine (to 0)."""
    warmup_steps: int = 0
    """Steps of linear learning-rate warm-up before the schedule starts."""
    grad_clip_norm: float = 0.0
    """Clip each network's gradient norm to this value before its step; 0 disables clipping."""

    def __post_init__(self) -> None:
        _require(self.g_lr > 0 and self.d_lr > 0, "optim.g_lr and optim.d_lr must be > 0")
        _require(
            all(0.0 <= b < 1.0 for b in self.betas),
            f"optim.betas must be in [0, 1), got {self.betas}",
        )
        _require(
            self.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {self.warmup_steps}"
        )
        _require(
            self.grad_clip_norm >= 0,
            f"optim.grad_clip_norm must be >= 0, got {self.grad_clip_norm}",
        )


@dataclass
class TrainConfig:
    steps: int = 5000
    """Training iterations; each is one D step and one G step on one global batch."""
    batch_size: int = 64
    """Global batch size: summed over all ranks; must divide evenly by the number of ranks."""
    loss: str = "nonsaturating"
    """Adversarial objective from the registry."""
    mixed_precision: MixedPrecision = "auto"
    """auto (bf16 on GPUs that support it, else fp32), fp32, bf16, or fp16 (CUDA, loss scaling)."""
    seed: int = 0
    """Base seed; each rank and data worker derives its own from it."""
    log_every: int = 20
    """Steps between scalar logs (cross-rank reductions happen only then)."""
    sample_every: int = 500
    """Steps between sample grids from a fixed latent batch."""
    num_samples: int = 64
    """Images in each sample grid."""
    checkpoint_every: int = 1000
    """Steps between checkpoints; one is always written at the last step."""
    checkpoints_total_limit: int = 3
    """Complete checkpoints kept; older ones are pruned after each successful save."""
    progress_bar: bool = True
    """Show a tqdm bar on the main process."""
    n_critic: int = 1
    """Discriminator steps per generator step, each on a fresh real batch (5 for WGAN-GP)."""
    ema_half_life_images: int = 0
    """Half-life of the generator EMA in images (global, so independent of GPU count); 0: no EMA."""
    augment: str | None = None
    """DiffAugment policy for real and fake images in D: comma list of translation, cutout, color."""
    stop_check_every: int = 10
    """Steps between the ranks' check for a stop request (SIGTERM, or the stop file the Slurm
    script writes on USR1): one all-reduce of a flag; the run checkpoints and exits at that step."""

    def __post_init__(self) -> None:
        from gandist.registry import LOSSES

        LOSSES.check(self.loss, "train.loss")
        for key in ("steps", "batch_size", "log_every", "sample_every", "checkpoint_every"):
            value = getattr(self, key)
            _require(value >= 1, f"train.{key} must be >= 1, got {value}")
        _require(self.num_samples >= 1, f"train.num_samples must be >= 1, got {self.num_samples}")
        _require(
            self.checkpoints_total_limit >= 1,
            f"train.checkpoints_total_limit must be >= 1, got {self.checkpoints_total_limit}",
        )
        _require(self.n_critic >= 1, f"train.n_critic must be >= 1, got {self.n_critic}")
        _require(
            self.ema_half_life_images >= 0,
            f"train.ema_half_life_images must be >= 0, got {self.ema_half_life_images}",
        )
        from gandist.augment import check_policy

        check_policy(self.augment or "", "train.augment")
        _require(
            self.stop_check_every >= 1,
            f"train.stop_check_every must be >= 1, got {self.stop_check_every}",
        )


@dataclass
class RegConfig:
    gp_weight: float = 0.0
    """WGAN-GP gradient penalty weight (10 in the paper); 0 disables it."""
    r1_gamma: float = 0.0
    """R1 penalty gamma: loss gamma/2 times the squared norm of D's input gradient on reals; 0: off."""
    r1_every: int = 16
    """Lazy R1: apply it every this many D steps, scaled up by the same factor."""
    pl_weight: float = 0.0
    """stylegan2: path-length regularisation weight (2 in the paper); 0 disables it."""
    pl_every: int = 4
    """Lazy path-length regularisation: every this many G steps, scaled up by the same factor."""
    ortho_weight: float = 0.0
    """BigGAN's orthogonal regularisation of G's weights (1e-4 in the paper); 0 disables it."""
    weight_clip: float = 0.0
    """WGAN: clamp every D parameter to [-c, c] after each D step (0.01 in the paper); 0 disables."""

    def __post_init__(self) -> None:
        for key in ("gp_weight", "r1_gamma", "pl_weight", "ortho_weight", "weight_clip"):
            value = getattr(self, key)
            _require(value >= 0, f"reg.{key} must be >= 0, got {value}")
        for key in ("r1_every", "pl_every"):
            value = getattr(self, key)
            _require(value >= 1, f"reg.{key} must be >= 1, got {value}")


@dataclass
class TrackingConfig:
    wandb: bool = True
    """Log to Weights & Biases (offline automatically when no API key is configured)."""
    project: str = "gandist"
    """wandb project name."""
    entity: str | None = None
    """wandb entity (team or user); None uses your default."""
    group: str | None = None
    """wandb group, to compare related runs (a sweep) side by side."""
    tags: list[str] = field(default_factory=list)
    """wandb tags."""


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

    def __post_init__(self) -> None:
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
        for key in ("num_samples", "num_real", "batch_size", "kid_subsets", "kid_subset_size"):
            value = getattr(self, key)
            _require(value >= 1, f"eval.{key} must be >= 1, got {value}")
        _require(self.isc_splits >= 1, f"eval.isc_splits must be >= 1, got {self.isc_splits}")
        _require(
            0.0 < self.max_share <= 1.0, f"eval.max_share must be in (0, 1], got {self.max_share}"
        )
        from gandist.metrics.extractors import check_extractor_name

        check_extractor_name(self.extractor, self.weights_path)

    @property
    def enabled(self) -> bool:
        """Whether training evaluates (eval.every or eval.every_images > 0)."""
        return self.every > 0 or self.every_images > 0


@dataclass
class Config:
    run_name: str = ""
    """Name of the run; defaults to the config file's stem (e.g. `dcgan`)."""
    output_dir: str = ""
    """Run directory; defaults to `runs/<run_name>`."""
    resume: str | None = None
    """`latest` (newest complete checkpoint in output_dir, or a fresh start if none) or a path."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    reg: RegConfig = field(default_factory=RegConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        _require(self.run_name != "" or self.output_dir != "", "run_name or output_dir must be set")
        if not self.output_dir:
            self.output_dir = str(Path("runs") / self.run_name)
        if not self.run_name:
            self.run_name = Path(self.output_dir).name
        from gandist.registry import MODELS

        validate = getattr(MODELS.get(self.model.name), "validate", None)
        if validate is not None:
            validate(self.model, self.data.resolution, self.data.channels)


def load_config(
    path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Merge dataclass defaults < YAML file < `key=value` overrides, then validate.

    Raises ConfigError naming the bad key, value or file and what would be accepted.
    """
    schema = OmegaConf.structured(Config)
    layers = []
    if path is not None:
        path = Path(path)
        _require(path.is_file(), f"config file not found: {path}")
        try:
            layers.append(OmegaConf.load(path))
        except (YAMLError, OmegaConfBaseException) as err:
            detail = " ".join(str(err).split())
            raise ConfigError(f"cannot parse {path}: {detail}") from None
    for item in overrides:
        _require("=" in item, f"override {item!r} must look like key=value (e.g. train.steps=100)")
    try:
        layers.append(OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {err}") from None

    merged = schema
    for layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except ConfigKeyError as err:
            raise ConfigError(_unknown_key_message(err)) from None
        except ValidationError as err:
            raise ConfigError(_validation_message(err)) from None
    if not merged.run_name and not merged.output_dir:
        merged.run_name = path.stem if path is not None else "gandist"
    try:
        return OmegaConf.to_object(merged)
    except ValidationError as err:
        raise ConfigError(_validation_message(err)) from None
    except OmegaConfBaseException as err:
        raise ConfigError(str(err).splitlines()[0]) from None


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML, as written into the run directory."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain containers (for trackers)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def _section_fields(dotted: str) -> list[str]:
    """Field names accepted at a dotted section path (`''` for the top level)."""
    cls: Any = Config
    for part in filter(None, dotted.split(".")):
        cls = {f.name: f for f in dataclasses.fields(cls)}[part].default_factory
    return [f.name for f in dataclasses.fields(cls)]


def _unknown_key_message(err: ConfigKeyError) -> str:
    key = str(getattr(err, "key", "") or "")
    parent = str(getattr(err, "full_key", "") or "")
    section = parent.rsplit(".", 1)[0] if "." in parent else ""
    full = f"{section}.{key}" if section else key
    try:
        accepted = _section_fields(section)
    except (KeyError, TypeError):
        return f"unknown config key: {full}"
    hint = difflib.get_close_matches(key, accepted, n=1)
    maybe = f" (did you mean {section + '.' if section else ''}{hint[0]}?)" if hint else ""
    where = f"in {section}" if section else "at the top level"
    return f"unknown config key '{full}'{maybe}; accepted {where}: {', '.join(accepted)}"


def _validation_message(err: ValidationError) -> str:
    key = getattr(err, "full_key", "") or "?"
    first = str(err).splitlines()[0]
    if "'False'" in first or "'True'" in first:
        first += " (YAML reads yes/no/on/off as booleans: quote the value, or write fp32 for no)"
    return f"bad value for '{key}': {first}"


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal under each field) read from the class source."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())  # type: ignore[attr-defined]
    return docs


def reference_markdown() -> str:
    """The config reference table for the README, generated from the dataclasses."""
    defaults = to_dict(Config(run_name="<config file stem>", output_dir="runs/<run_name>"))
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]

    def walk(cls: type, prefix: str, values: dict[str, Any]) -> None:
        docs = _field_docs(cls)
        for f in dataclasses.fields(cls):
            value = values[f.name]
            if dataclasses.is_dataclass(f.default_factory):
                walk(f.default_factory, f"{prefix}{f.name}.", value)
                continue
            shown = "null" if value is None else value
            lines.append(f"| `{prefix}{f.name}` | `{shown}` | {docs.get(f.name, '')} |")

    walk(Config, "", defaults)
    return "\n".join(lines) + "\n"
