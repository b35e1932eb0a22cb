"""The root config and the training sections; the one layer that checks names across sections.

Each section lives next to what it configures (`gandist.data.config`, `gandist.models.config`,
`gandist.metrics.config`, and the training loop's own sections here). Sections check their own
ranges; names that need a registry (model family, loss, augmentation policy, extractor) and
facts that span sections are checked here, at the top, so no lower module imports upward.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gandist.config import merge_layers, reference_markdown, to_object
from gandist.data.config import DataConfig
from gandist.errors import ConfigError, require_finite
from gandist.errors import require as _require
from gandist.metrics.config import EvalConfig
from gandist.models.config import ModelConfig

MixedPrecision = Literal["auto", "fp32", "bf16", "fp16"]
LRSchedule = Literal["constant", "linear", "cosine"]
CompileBackend = Literal["inductor", "aot_eager"]


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
    decay_after_steps: int = 0
    """linear and cosine: steps at the full rate (after the warm-up) before the decay to 0 at train.steps begins; CycleGAN holds for the first half of training."""
    grad_clip_norm: float = 0.0
    """Clip each network's gradient norm to this value before its step; 0 disables clipping."""

    def __post_init__(self) -> None:
        require_finite(self, "optim")
        _require(self.g_lr > 0 and self.d_lr > 0, "optim.g_lr and optim.d_lr must be > 0")
        _require(
            all(0.0 <= b < 1.0 for b in self.betas),
            f"optim.betas must be in [0, 1), got {self.betas}",
        )
        _require(
            self.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {self.warmup_steps}"
        )
        _require(
            self.decay_after_steps >= 0,
            f"optim.decay_after_steps must be >= 0, got {self.decay_after_steps}",
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
    """Images in each sample grid (cyclegan: rows, each one fixed image of A and one of B with their translations)."""
    checkpoint_every: int = 1000
    """Steps between checkpoints; one is always written at the last step."""
    checkpoints_total_limit: int = 3
    """Complete checkpoints kept; older ones are pruned after each successful save."""
    progress_bar: bool = True
    """Show progress on the main process: a tqdm bar on a terminal, plain lines in a log file."""
    progress_every_s: float = 60.0
    """Without a terminal (Slurm, CI, `> log`): seconds between plain progress lines."""
    n_critic: int = 1
    """Discriminator steps per generator step, each on a fresh real batch (5 for WGAN-GP)."""
    ema_half_life_images: int = 0
    """Half-life of the generator EMA in images (global, so independent of GPU count); 0: no EMA."""
    ema_rampup: float = 0.05
    """EMA warm-up (StyleGAN2-ADA's ema_rampup): the half-life is at most this x the images G has trained on, so early grids and scores are not dragged back to the random initial weights; 0: the full half-life from step 0."""
    augment: str | None = None
    """DiffAugment policy for real and fake images in D: comma list of translation, cutout, color."""
    ada_target: float = 0.0
    """Adaptive discriminator augmentation (ADA): the target of r_t = E[sign(D(real))], 0.6 in
    the paper; the augment probability p rises while r_t is above it. 0 disables ADA."""
    ada_interval: int = 4
    """ADA: D steps between adjustments of p (each one all-reduce of two numbers)."""
    ada_ramp_images: int = 500_000
    """ADA: images over which p can move from 0 to 1 (the paper's 500k); smaller adapts faster."""
    algorithm: str = "adversarial"
    """The training algorithm: `adversarial` (one generator against one discriminator) or `cyclegan` (unpaired translation between data.shards and data.shards_b; model.name=cyclegan)."""
    skip_nonfinite: bool = True
    """Skip, on every rank, an update whose loss or gradients are not finite (one all-reduce of a flag per update); fp16 always skips through its loss scaler."""
    max_bad_steps: int = 20
    """Stop the run (unsaved; its last checkpoint intact) after this many skipped updates in a row."""
    stop_check_every: int = 10
    """Steps between the ranks' check for a stop request (SIGTERM, or the stop file the Slurm
    script writes on USR1): one all-reduce of a flag; the run checkpoints and exits at that step."""
    dist_timeout_s: float = 300.0
    """Seconds a collective waits for a rank that is stuck or gone before the others stop with an error naming it (gloo's own default is 30 minutes)."""
    compile: bool = False
    """torch.compile G and D inside DDP (penalties, sampling and evaluation stay eager); the first
    steps pay the compile time (tens of seconds per network), later steps run faster."""
    compile_backend: CompileBackend = "inductor"
    """torch.compile's backend under train.compile: inductor (generated kernels; on CPU it needs
    a C++ compiler and minutes to compile), or aot_eager (the same graph capture and AOTAutograd,
    no code generation: checks a model compiles, no speed-up)."""
    channels_last: bool = False
    """Keep the 2-d convolutional networks in channels_last (NHWC) memory: faster convolutions
    on tensor-core GPUs, most of all under bf16/fp16."""

    def __post_init__(self) -> None:
        require_finite(self, "train")
        for key in ("steps", "batch_size", "log_every", "sample_every", "checkpoint_every"):
            value = getattr(self, key)
            _require(value >= 1, f"train.{key} must be >= 1, got {value}")
        _require(
            self.progress_every_s >= 0,
            f"train.progress_every_s must be >= 0, got {self.progress_every_s}",
        )
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
        _require(
            self.ema_rampup >= 0,
            f"train.ema_rampup must be >= 0 (0.05 in StyleGAN2-ADA, 0: off), got {self.ema_rampup}",
        )
        _require(
            0 <= self.ada_target < 1,
            f"train.ada_target must be in [0, 1) (0.6 in the paper, 0: off), got {self.ada_target}",
        )
        for key in ("ada_interval", "ada_ramp_images"):
            value = getattr(self, key)
            _require(value >= 1, f"train.{key} must be >= 1, got {value}")
        _require(
            self.max_bad_steps >= 1, f"train.max_bad_steps must be >= 1, got {self.max_bad_steps}"
        )
        _require(
            self.stop_check_every >= 1,
            f"train.stop_check_every must be >= 1, got {self.stop_check_every}",
        )
        _require(0 <= self.seed < 2**63, f"train.seed must be in [0, 2**63), got {self.seed}")
        _require(
            self.dist_timeout_s > 0,
            f"train.dist_timeout_s must be > 0 seconds, got {self.dist_timeout_s}",
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
    lecam_weight: float = 0.0
    """LeCam regularisation of D for limited data (Tseng et al., 2021; 0.1-0.3 in the paper): pulls D's outputs towards moving averages of the other side's; 0 disables it."""
    lecam_decay: float = 0.99
    """Decay of the LeCam anchors (moving averages of D's mean outputs on reals and fakes)."""
    diversity_weight: float = 0.0
    """Mode-seeking term for G against mode collapse (MSGAN, Mao et al., 2019; 1 in the paper): penalises pairs of latents whose images are close; 0 disables it."""
    weight_clip: float = 0.0
    """WGAN: clamp every D parameter to [-c, c] after each D step (0.01 in the paper); 0 disables."""

    def __post_init__(self) -> None:
        require_finite(self, "reg")
        _require(
            0.0 <= self.lecam_decay < 1.0,
            f"reg.lecam_decay must be in [0, 1), got {self.lecam_decay}",
        )
        for key in (
            "gp_weight",
            "r1_gamma",
            "pl_weight",
            "ortho_weight",
            "weight_clip",
            "lecam_weight",
            "diversity_weight",
        ):
            value = getattr(self, key)
            _require(value >= 0, f"reg.{key} must be >= 0, got {value}")
        for key in ("r1_every", "pl_every"):
            value = getattr(self, key)
            _require(value >= 1, f"reg.{key} must be >= 1, got {value}")


@dataclass
class CycleConfig:
    """CycleGAN's objective (train.algorithm=cyclegan); the defaults are the paper's. The adversarial loss is least squares, as in the paper (train.loss is not used)."""

    cycle_weight: float = 10.0
    """lambda: weight of the cycle-consistency L1 losses |G_BA(G_AB(a)) - a| and |G_AB(G_BA(b)) - b|."""
    identity_weight: float = 0.5
    """Weight of the identity L1 losses |G_AB(b) - b| and |G_BA(a) - a|, as a multiple of cycle_weight (0 disables them)."""
    pool_size: int = 50
    """Generated images kept per discriminator and rank; D trains on a random mix of stored and new fakes (0 disables the pool)."""

    def __post_init__(self) -> None:
        for key in ("cycle_weight", "identity_weight"):
            value = getattr(self, key)
            _require(value >= 0, f"cycle.{key} must be >= 0, got {value}")
        _require(self.pool_size >= 0, f"cycle.pool_size must be >= 0, got {self.pool_size}")


@dataclass
class TrackingConfig:
    wandb: bool = True
    """Log to Weights & Biases (offline automatically when no API key is configured)."""
    project: str = "gandist"
    """wandb project name."""
    entity: str | None = None
    """wandb entity (team or user); None uses your default."""
    name: str | None = None
    """wandb display name; None uses run_name."""
    group: str | None = None
    """wandb group, to compare related runs (a sweep) side by side."""
    tags: list[str] = field(default_factory=list)
    """wandb tags."""
    job_type: str | None = None
    """wandb job type (e.g. `train`, `sweep`, `ablation`), to filter and group runs by it."""
    notes: str | None = None
    """wandb notes: a sentence on what this run tries."""


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
    cycle: CycleConfig = field(default_factory=CycleConfig)

    def __post_init__(self) -> None:
        _require(self.run_name != "" or self.output_dir != "", "run_name or output_dir must be set")
        if not self.output_dir:
            self.output_dir = str(Path("runs") / self.run_name)
        if not self.run_name:
            self.run_name = Path(self.output_dir).name
        check_names(self)


def check_names(cfg: Config) -> None:
    """Names looked up in registries, and model facts that depend on the data section."""
    from gandist.registry import ALGORITHMS, LOSSES, MODELS

    # Registry names first: they are known without importing torch, so a typo answers at once.
    ALGORITHMS.check(cfg.train.algorithm, "train.algorithm")
    MODELS.check(cfg.model.name, "model.name")
    LOSSES.check(cfg.train.loss, "train.loss")
    from gandist.ada import check_ada_data
    from gandist.augment import check_policy
    from gandist.metrics.extractors import check_extractor_name

    check_policy(cfg.train.augment or "", "train.augment")
    check_ada_data(cfg.train.ada_target, cfg.data.kind)
    check_extractor_name(cfg.eval.extractor, cfg.eval.weights_path)
    translator = bool(getattr(MODELS.get(cfg.model.name), "translator", False))
    if translator != (cfg.train.algorithm == "cyclegan"):
        raise ConfigError(
            f"model.name={cfg.model.name} and train.algorithm={cfg.train.algorithm} do not fit: "
            "train.algorithm=cyclegan trains model.name=cyclegan (image-to-image translators) "
            "and every other family trains with train.algorithm=adversarial"
        )
    if cfg.train.algorithm == "cyclegan" and not cfg.data.shards_b:
        raise ConfigError(
            "train.algorithm=cyclegan translates between two unpaired sets: data.shards holds "
            "domain A, and data.shards_b must name the shards of domain B (e.g. "
            "data.shards_b=data/glyphs-b)"
        )
    if cfg.data.shards_b and cfg.train.algorithm != "cyclegan":
        raise ConfigError(
            f"data.shards_b={cfg.data.shards_b} is domain B of unpaired translation, which only "
            f"train.algorithm=cyclegan reads (this config trains {cfg.train.algorithm}): remove "
            "data.shards_b, or join sets into data.shards with `::`"
        )
    if cfg.train.algorithm == "cyclegan" and cfg.data.kind != "image":
        raise ConfigError(
            f"train.algorithm=cyclegan translates images; got data.kind={cfg.data.kind}"
        )
    check_data_kind(cfg)
    family = MODELS.get(cfg.model.name)
    if cfg.model.num_classes and not getattr(family, "conditional", False):
        raise ConfigError(
            f"model.num_classes={cfg.model.num_classes} but model.name={cfg.model.name} is "
            "unconditional (it ignores labels): set model.num_classes=0, or choose a "
            "class-conditional family (conditional, biggan)"
        )
    validate = getattr(family, "validate", None)
    if validate is not None:
        validate(cfg.model, cfg.data.resolution, cfg.data.channels)
    from gandist.training.multi_d import check_multi_d

    check_multi_d(cfg.model, cfg.data, cfg.train.algorithm)


KIND_NOUNS = {"image": "images", "audio": "audio"}


def family_kind(model_name: str) -> str:
    """What a model family generates: `image` (the default) or `audio` (its builder's `kind`)."""
    from gandist.registry import MODELS

    return str(getattr(MODELS.get(model_name), "kind", "image"))


def families_of_kind(kind: str) -> list[str]:
    """The generative families of a kind (translators such as cyclegan are another algorithm's)."""
    from gandist.registry import MODELS

    return [
        name
        for name in MODELS.names()
        if family_kind(name) == kind and not getattr(MODELS.get(name), "translator", False)
    ]


def a_family(kind: str) -> str:
    """'an audio family (conditional-wavegan, wavegan)', for messages."""
    article = "an" if kind[0] in "aeiou" else "a"
    return f"{article} {kind} family ({', '.join(families_of_kind(kind))})"


def check_data_kind(cfg: Config) -> None:
    """The family generates what data.kind says the shards hold; options exist for that kind."""
    kind, name = cfg.data.kind, cfg.model.name
    made = family_kind(name)
    if made != kind:
        raise ConfigError(
            f"model.name={name} generates {KIND_NOUNS[made]} but data.kind={kind}: choose "
            f"{a_family(kind)} or set data.kind={made} with {made} shards"
        )
    if kind != "audio":
        return
    if cfg.train.augment:
        raise ConfigError(
            f"train.augment={cfg.train.augment!r} is DiffAugment for images and cannot apply "
            "to data.kind=audio: leave it empty; audio D's augmentation is model.phase_shuffle, "
            "and reg.gp_weight, reg.r1_gamma, reg.weight_clip and reg.ortho_weight work on audio"
        )
    if cfg.reg.pl_weight > 0:
        raise ConfigError(
            f"reg.pl_weight={cfg.reg.pl_weight} is StyleGAN2's image path-length penalty and "
            "cannot apply to data.kind=audio: set it to 0; reg.gp_weight, reg.r1_gamma, "
            "reg.weight_clip and reg.ortho_weight work on audio"
        )
    if cfg.data.length != cfg.model.audio_length:
        raise ConfigError(
            f"model.audio_length={cfg.model.audio_length} but data.length={cfg.data.length}: "
            "the model generates clips as long as the ones it trains on; set both to the same"
        )


def config_warnings(cfg: Config) -> list[str]:
    """Settings that run but are most likely a mistake, for the start-up summary."""
    warnings = []
    if cfg.train.loss == "wasserstein" and not (cfg.reg.gp_weight > 0 or cfg.reg.weight_clip > 0):
        warnings.append(
            "train.loss=wasserstein without a Lipschitz constraint on D: set reg.gp_weight "
            "(WGAN-GP, 10) or reg.weight_clip (WGAN, 0.01); otherwise the critic's outputs grow "
            "without bound"
        )
    optim, decay_start = cfg.optim, cfg.optim.warmup_steps + cfg.optim.decay_after_steps
    if (
        optim.lr_schedule != "constant"
        and optim.decay_after_steps > 0
        and decay_start >= cfg.train.steps
    ):
        warnings.append(
            f"optim.decay_after_steps={optim.decay_after_steps} (after optim.warmup_steps="
            f"{optim.warmup_steps}) reaches train.steps={cfg.train.steps}: the "
            f"optim.lr_schedule={optim.lr_schedule} decay never starts and the rates stay at their "
            "full value; set optim.decay_after_steps below train.steps (CycleGAN: half of it)"
        )
    return warnings


def load_config(
    path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Merge dataclass defaults < YAML file < `key=value` overrides, then validate.

    Raises ConfigError naming the bad key, value or file and what would be accepted.
    """
    merged = merge_layers(Config, path, overrides)
    if not merged.run_name and not merged.output_dir:
        merged.run_name = Path(path).stem if path is not None else "gandist"
    return to_object(merged)


def config_reference() -> str:
    """The config reference table for the docs, generated from the dataclasses."""
    return reference_markdown(Config(run_name="<config file stem>", output_dir="runs/<run_name>"))
