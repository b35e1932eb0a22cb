"""`adversarial`: one generator against one discriminator, with every objective and penalty.

Each training step is `train.n_critic` D phases, each on a fresh real batch, then one G phase.
The D phase runs G under no_grad, so no G gradients are formed; the G phase goes through D's
local module (not its DDP wrapper: DDP would wait for gradients a frozen D never produces),
compiled on its own under train.compile (`compile_frozen`).
Penalties differentiate the local modules with autograd.grad and are added to the phase's
loss, so one backward carries them and DDP all-reduces the sum once.
With model.num_discriminators > 1 the D phase trains every discriminator (`training.multi_d`)
and both phases average the objective and the D penalties over them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gandist.ada import AdaptiveAugment
from gandist.augment import DiffAugment
from gandist.diagnostics import sample_diversity
from gandist.ema import GeneratorEMA, LogitAnchors
from gandist.losses import (
    gradient_penalty,
    interpolate,
    lecam_penalty,
    mode_seeking_penalty,
    orthogonal_penalty,
    path_length_penalty,
    r1_penalty,
)
from gandist.models import generate
from gandist.models.layers import conv_weights
from gandist.registry import ALGORITHMS, LOSSES, MODELS
from gandist.training.algorithm import Algorithm, Metrics, OptimizerSpec, Phase, Runtime
from gandist.training.config import KIND_NOUNS, Config
from gandist.training.multi_d import average, build_extra_discriminators, discriminator_names, view
from gandist.training.performance import compile_frozen

G, D = "generator", "discriminator"
# Per-class sample grids of a conditional model: the first 16 classes, 16 images each (a
# 1000-class model would otherwise spend its sample steps drawing).
CLASS_GRIDS, CLASS_GRID_SIZE = 16, 16


@ALGORITHMS.register("adversarial")
class AdversarialGAN(Algorithm):
    """One G, one D: nonsaturating, hinge, Wasserstein or least-squares objectives, n_critic,
    WGAN-GP, lazy R1, path length, orthogonal regularisation, weight clipping, DiffAugment and
    the generator EMA, for every family in the model registry: images or audio (data.kind)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        # The batch key of the real samples: "image" [B, C, H, W] or "audio" [B, 1, L].
        self.media = cfg.data.kind
        generator, discriminator = MODELS.get(cfg.model.name)(
            cfg.model, cfg.data.resolution, cfg.data.channels
        )
        self.networks = {G: generator, D: discriminator}
        # Every discriminator by name, D first; the others only with model.num_discriminators > 1.
        self.discriminators = discriminator_names(cfg.model.num_discriminators)
        extras = build_extra_discriminators(cfg.model, cfg.data.resolution, cfg.data.channels)
        self.networks |= dict(zip(self.discriminators[1:], extras, strict=True))
        self.objective = LOSSES.get(cfg.train.loss)
        self.augment = DiffAugment(cfg.train.augment or "")
        train = cfg.train
        self.ada = (
            AdaptiveAugment(train.ada_target, train.ada_interval, train.ada_ramp_images)
            if train.ada_target > 0
            else None
        )
        # LeCam anchors per discriminator: each D's outputs have their own scale.
        self.lecam = (
            [LogitAnchors(cfg.reg.lecam_decay) for _ in self.discriminators]
            if cfg.reg.lecam_weight > 0
            else []
        )
        self.num_classes = int(getattr(generator, "num_classes", 0))
        self.ema = (
            GeneratorEMA(generator, cfg.train.ema_half_life_images, cfg.train.ema_rampup)
            if cfg.train.ema_half_life_images > 0
            else None
        )
        if cfg.reg.pl_weight > 0 and not hasattr(generator, "synthesis"):
            raise ValueError(
                f"reg.pl_weight={cfg.reg.pl_weight} needs a generator with a mapping and a "
                f"synthesis network (model.name=stylegan2), not model.name={cfg.model.name}"
            )
        # Lazy penalties report their latest value on every step, so a log window's mean is
        # not diluted by the steps that skipped them.
        self._lazy_metrics: Metrics = {}
        # The same latent batch for every grid, so samples over time show one evolving set.
        num = cfg.train.num_samples
        self.fixed_latents = torch.randn(
            num, cfg.model.latent_dim, generator=torch.Generator().manual_seed(cfg.train.seed)
        )
        # Conditional grids cycle through the classes: row by row, 0, 1, 2, ...
        self.fixed_labels = torch.arange(num) % self.num_classes if self.num_classes else None

    # ---- what the Trainer asks ----------------------------------------------------------

    @property
    def images_per_step(self) -> int:
        return self.runtime.batch_per_rank * self.runtime.world_size * self.cfg.train.n_critic

    def optimizers(self) -> dict[str, OptimizerSpec]:
        """Adam for G and for D; a network with a lazy penalty gets StyleGAN2's correction.

        StyleGAN2 (Appendix B, `training_loop.py`) regularises every k-th minibatch and scales
        Adam to c = k / (k + 1): lr * c, betas ** c. So `optim.*_lr` and `optim.betas` mean what
        they mean in the paper's configs; the rate Adam runs at is the logged `train/lr_g`,
        `train/lr_d` (D with lazy R1 every 16 steps: 16/17 of optim.d_lr; G with path length
        every 4: 4/5 of optim.g_lr). A penalty on every step (k = 1) is not lazy: no change.
        """
        optim, reg = self.cfg.optim, self.cfg.reg

        def spec(networks: tuple[str, ...], lr: float, lazy_every: int) -> OptimizerSpec:
            ratio = lazy_every / (lazy_every + 1) if lazy_every > 1 else 1.0
            beta1, beta2 = optim.betas
            return OptimizerSpec(networks, lr * ratio, (beta1**ratio, beta2**ratio))

        return {
            "g": spec((G,), optim.g_lr, reg.pl_every if reg.pl_weight > 0 else 1),
            "d": spec(self.discriminators, optim.d_lr, reg.r1_every if reg.r1_gamma > 0 else 1),
        }

    def phases(self, step: int) -> list[Phase]:
        n_critic = self.cfg.train.n_critic
        critic = [
            Phase("d", self.discriminators, "d", True, step * n_critic + i) for i in range(n_critic)
        ]
        return [*critic, Phase("g", (G,), "g", False, step)]

    def loss(self, phase: Phase, batch: dict[str, Any] | None) -> tuple[torch.Tensor, Metrics]:
        if phase.name == "d":
            assert batch is not None
            return self._d_loss(*self._real(batch), phase.index)
        return self._g_loss(phase.index)

    def bind(self, runtime: Runtime) -> None:
        super().bind(runtime)
        train = self.cfg.train
        self.frozen_d = compile_frozen(self.local(D), train.compile, train.compile_backend)
        if self.ada is not None:
            self.ada.to(runtime.device)
        for anchors in self.lecam:
            anchors.to(runtime.device)

    def after_update(self, phase: Phase, skipped: bool) -> None:
        if (
            phase.name == "d"
            and self.ada is not None
            and (phase.index + 1) % self.ada.interval == 0
        ):
            self.ada.adjust(
                self.ada.interval * self.runtime.batch_per_rank * self.runtime.world_size
            )
        if phase.name == "d" and self.cfg.reg.weight_clip > 0:
            clip = self.cfg.reg.weight_clip
            with torch.no_grad():
                for name in self.discriminators:
                    for param in self.networks[name].parameters():
                        param.clamp_(-clip, clip)
        if phase.name == "g" and self.ema is not None:
            images = self.runtime.batch_per_rank * self.runtime.world_size
            self.ema.update(self.local(G), images, images_seen=phase.index * images)

    def sample(self) -> dict[str, torch.Tensor]:
        """`samples` from the generator evaluation scores (the EMA when on), `samples_raw` from
        the trained generator when there is an EMA, and `samples_class_K` (the same latents,
        all of class K) for the first CLASS_GRIDS classes of a conditional model."""
        grids = {"samples": self._draw(self.eval_generator(), self.fixed_labels)}
        if self.ema is not None:
            grids["samples_raw"] = self._draw(self.local(G), self.fixed_labels)
        per_class = min(len(self.fixed_latents), CLASS_GRID_SIZE)
        for label in range(min(self.num_classes, CLASS_GRIDS)):
            labels = torch.full((per_class,), label, dtype=torch.long)
            grids[f"samples_class_{label}"] = self._draw(self.eval_generator(), labels)
        return grids

    @torch.no_grad()
    def _draw(self, generator: nn.Module, labels: torch.Tensor | None) -> torch.Tensor:
        was_training = generator.training
        generator.eval()
        device = self.runtime.device
        num = len(labels) if labels is not None else len(self.fixed_latents)
        labels = None if labels is None else labels.to(device)
        with self.runtime.autocast():
            latents = self.fixed_latents[:num].to(device)
            images = generate(generator, latents, labels, self.cfg.eval.truncation)
        generator.train(was_training)
        return images

    def eval_generator(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.local(G)

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"ema": self.ema} if self.ema is not None else {}
        return state | ({"ada": self.ada} if self.ada is not None else {})

    def rank_state(self) -> dict[str, Any]:
        # LeCam anchors average this rank's own logits: no collective per step.
        return {f"lecam_{k}" if k else "lecam": anchors for k, anchors in enumerate(self.lecam)}

    def check_batch(self, batch: dict[str, Any]) -> None:
        if self.media not in batch:
            raise ValueError(
                f"model.name={self.cfg.model.name} trains on {KIND_NOUNS[self.media]} but the "
                f"batches hold {sorted(batch)}: set data.kind={self.media} and point data.shards "
                f"at {self.media} shards"
            )
        if not self.num_classes:
            return
        labels = batch.get("label")
        synth = "glyphs" if self.media == "image" else "tones"
        if labels is None or bool((labels < 0).any()):
            raise ValueError(
                f"model.name={self.cfg.model.name} is class-conditional but the shards in "
                f"data.shards={self.cfg.data.shards} hold samples without a class label (no "
                f"'cls' entry): write labelled shards (`gandist data synth {synth}` does) or "
                "choose an unconditional model"
            )
        if bool((labels >= self.num_classes).any()):
            raise ValueError(
                f"the shards hold class label {int(labels.max())} but model.num_classes="
                f"{self.num_classes}: set model.num_classes to the number of classes"
            )

    # ---- the maths ----------------------------------------------------------------------

    def _real(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.check_batch(batch)
        device = self.runtime.device
        real_images = batch[self.media].to(device, non_blocking=True)
        assert real_images.shape[0] == self.runtime.batch_per_rank, "every rank needs full batches"
        labels = batch["label"].to(device, non_blocking=True) if self.num_classes else None
        return real_images, labels

    def _latents(self, batch_size: int) -> torch.Tensor:
        return torch.randn(batch_size, self.cfg.model.latent_dim, device=self.runtime.device)

    def _fake_labels(self, batch_size: int) -> torch.Tensor | None:
        """Uniform class labels [B] for generated images, or None for unconditional models."""
        if not self.num_classes:
            return None
        return torch.randint(0, self.num_classes, (batch_size,), device=self.runtime.device)

    def _critics(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        wrapped: bool = False,
        frozen: bool = False,
    ) -> list[torch.Tensor]:
        """Every D's logits [B] on the images augmented once (the same DiffAugment and ADA for
        real and fake), each D at its own scale. `wrapped`: through the DDP wrappers (the D
        phase's own update); otherwise the local modules (penalties). `frozen` (the G phase):
        the first D through its compiled frozen module (`compile_frozen`)."""
        if self.augment:
            images = self.augment(images)
        if self.ada is not None:
            images = self.ada(images)
        mode = self.cfg.model.multi_d
        logits = []
        for k, name in enumerate(self.discriminators):
            critic = self.networks[name] if wrapped else self.local(name)
            if frozen and name == D:
                critic = self.frozen_d
            seen = view(images, k, mode)
            logits.append(critic(seen) if labels is None else critic(seen, labels))
        return logits

    def _d_loss(
        self, real_images: torch.Tensor, real_labels: torch.Tensor | None, index: int
    ) -> tuple[torch.Tensor, Metrics]:
        batch_size = real_images.shape[0]
        fake_labels = self._fake_labels(batch_size)
        with torch.no_grad(), self.runtime.autocast():
            fake_images = generate(self.networks[G], self._latents(batch_size), fake_labels)
        with self.runtime.autocast():
            real_logits = self._critics(real_images, real_labels, wrapped=True)
            fake_logits = self._critics(fake_images, fake_labels, wrapped=True)
            parts = [
                self.objective.d_loss(*pair) for pair in zip(real_logits, fake_logits, strict=True)
            ]
            loss, metrics = average(parts)
        metrics |= per_discriminator("d", parts)
        if self.ada is not None:
            self.ada.observe(real_logits[0])  # the first D's overfitting drives p
            metrics |= self.ada.metrics()
        lecam, lecam_metrics = average(
            [
                self._lecam(k, *pair)
                for k, pair in enumerate(zip(real_logits, fake_logits, strict=True))
            ]
        )
        penalty, penalty_metrics = self._d_penalties(
            real_images, real_labels, fake_images, fake_labels, index
        )
        if self.diagnostics:
            metrics["real_diversity"] = sample_diversity(real_images)
        total = loss + lecam + penalty
        return total, {"d_loss": loss.detach(), **metrics, **lecam_metrics, **penalty_metrics}

    def _lecam(
        self, k: int, real_logits: torch.Tensor, fake_logits: torch.Tensor
    ) -> tuple[torch.Tensor, Metrics]:
        """D k's weighted LeCam penalty on this D step's logits, after moving its anchors."""
        if not self.lecam:
            return torch.zeros((), device=real_logits.device), {}
        anchors = self.lecam[k]
        anchors.update(real_logits.detach(), fake_logits.detach())
        penalty, metrics = lecam_penalty(real_logits, fake_logits, anchors.real, anchors.fake)
        return self.cfg.reg.lecam_weight * penalty, metrics

    def _d_penalties(
        self,
        real_images: torch.Tensor,
        real_labels: torch.Tensor | None,
        fake_images: torch.Tensor,
        fake_labels: torch.Tensor | None,
        index: int,
    ) -> tuple[torch.Tensor, Metrics]:
        reg = self.cfg.reg
        grad_scale = self.runtime.grad_scale("d")
        total = torch.zeros((), device=self.runtime.device)
        metrics: Metrics = {}
        if reg.gp_weight > 0:
            # Interpolates pair real and fake images of the same index; conditional critics
            # see the real labels (WGAN-GP is unconditional in the paper).
            points = interpolate(real_images, fake_images)
            with self.runtime.autocast():
                logits = self._critics(points, real_labels)
            penalty, m = average([gradient_penalty(points, x, grad_scale) for x in logits])
            total = total + reg.gp_weight * penalty
            metrics |= m
        if reg.r1_gamma > 0 and index % reg.r1_every == 0:
            reals = real_images.detach().requires_grad_(True)
            with self.runtime.autocast():
                logits = self._critics(reals, real_labels)
            penalty, m = average([r1_penalty(reals, x, grad_scale) for x in logits])
            # Lazy regularisation: every r1_every steps, r1_every times as strong.
            total = total + (reg.r1_gamma / 2) * reg.r1_every * penalty
            self._lazy_metrics |= m
        return total, metrics | {k: v for k, v in self._lazy_metrics.items() if k == "r1"}

    def _g_loss(self, index: int) -> tuple[torch.Tensor, Metrics]:
        batch_size = self.runtime.batch_per_rank
        labels = self._fake_labels(batch_size)
        latents = self._latents(batch_size)
        with self.runtime.autocast():
            fake_images = generate(self.networks[G], latents, labels)
            critics = self._critics(fake_images, labels, frozen=True)
            parts = [self.objective.g_loss(x) for x in critics]
            loss, metrics = average(parts)
        metrics |= per_discriminator("g", parts)
        penalty, penalty_metrics = self._g_penalties(batch_size, index)
        if self.cfg.reg.diversity_weight > 0:
            diversity, m = mode_seeking_penalty(fake_images, latents)
            penalty = penalty + self.cfg.reg.diversity_weight * diversity
            penalty_metrics |= m | {"mode_seeking": diversity.detach()}
        if self.diagnostics:
            metrics["sample_diversity"] = sample_diversity(fake_images)
        return loss + penalty, {"g_loss": loss.detach(), **metrics, **penalty_metrics}

    def _g_penalties(self, batch_size: int, index: int) -> tuple[torch.Tensor, Metrics]:
        reg = self.cfg.reg
        local_g = self.local(G)
        total = torch.zeros((), device=self.runtime.device)
        metrics: Metrics = {}
        if reg.ortho_weight > 0:
            weights_fn = getattr(local_g, "regularized_weights", None)
            weights = weights_fn() if weights_fn is not None else conv_weights(local_g)
            penalty, metrics = orthogonal_penalty(weights)
            total = total + reg.ortho_weight * penalty
        if reg.pl_weight > 0 and index % reg.pl_every == 0:
            # Half the batch, as in StyleGAN2: the penalty only needs a mean path length.
            ws = local_g.mapping(self._latents(max(1, batch_size // 2)))
            with self.runtime.autocast():
                images = local_g.synthesis(ws)
            penalty, m = path_length_penalty(
                images, ws, local_g.pl_mean, grad_scale=self.runtime.grad_scale("g")
            )
            with torch.no_grad():
                # A step whose fp16 gradients overflowed is skipped; keep its inf out of the target.
                new_mean = m.pop("pl_mean")
                local_g.pl_mean.copy_(torch.where(new_mean.isfinite(), new_mean, local_g.pl_mean))
            total = total + reg.pl_weight * reg.pl_every * penalty
            self._lazy_metrics |= m | {"pl": penalty.detach()}
        lazy = {k: v for k, v in self._lazy_metrics.items() if k in ("pl", "pl_length")}
        return total, metrics | lazy


def per_discriminator(phase: str, parts: list[tuple[torch.Tensor, Metrics]]) -> Metrics:
    """Each discriminator's own loss (`d1_loss`, `g1_loss`, ...) when there are several; the
    plain `d_loss` / `g_loss` are their mean."""
    if len(parts) == 1:
        return {}
    return {f"{phase}{k}_loss": loss.detach() for k, (loss, _) in enumerate(parts)}
