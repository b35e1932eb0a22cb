"""The Trainer: owns the Accelerator, alternates D and G steps, and paces logging, samples and saves."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from gandist import __version__, checkpoint, preemption
from gandist.augment import DiffAugment
from gandist.config import Config, to_dict, to_yaml
from gandist.data.stream import (
    DataHealth,
    StreamPosition,
    build_loader,
    check_bad_fraction,
    derive_seed,
)
from gandist.diagnostics import sample_diversity
from gandist.distributed import assert_ranks_in_sync, build_accelerator, resolve_mixed_precision
from gandist.ema import GeneratorEMA
from gandist.losses import (
    gradient_penalty,
    interpolate,
    orthogonal_penalty,
    path_length_penalty,
    r1_penalty,
)
from gandist.models.layers import conv_weights
from gandist.registry import LOSSES, MODELS
from gandist.sampling import generate
from gandist.schedules import build_scheduler
from gandist.tracking import (
    METRICS_FILE,
    JsonlTracker,
    image_grid,
    log_image,
    wandb_mode,
    wandb_run_id,
)

log = logging.getLogger(__name__)

RUN_INFO_FILE = "run.json"


@dataclass
class TrainState:
    """Counters saved with every checkpoint (registered with Accelerate's save_state)."""

    step: int = 0
    images_seen: int = 0
    data_positions: list[list[int]] = field(default_factory=list)
    """Each rank's StreamPosition (as a list) when the checkpoint was taken."""
    data_counts: list[int] = field(default_factory=lambda: [0, 0])
    """Bad samples skipped and samples read, summed over ranks, when the checkpoint was taken."""

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.images_seen = int(state["images_seen"])
        self.data_positions = [list(row) for row in state.get("data_positions", [])]
        self.data_counts = [int(n) for n in state.get("data_counts", [0, 0])]


def _isolated_from_global_rng(batches: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Yield from `batches` without letting them draw from the global torch RNG.

    A DataLoader draws its workers' base seed from the global RNG when it starts (on the first
    batch): that draw would shift the latents of a resumed run against an uninterrupted one.
    """
    while True:
        with torch.random.fork_rng(devices=[]):
            batch = next(batches, None)
        if batch is None:
            return
        yield batch


class Trainer:
    """Trains one GAN described by a Config on every process the launcher started.

    `batches` replaces the shard stream with any iterable of {"image": [B, C, H, W]} dicts
    holding this rank's share of the global batch (benchmarks and tests use it).
    """

    def __init__(self, cfg: Config, batches: Iterable[dict[str, Any]] | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.output_dir)
        self.accelerator = self._build_accelerator()
        self.batch_per_rank = self._batch_per_rank()
        self._build_models()
        self._build_optimizers()
        self.generator, self.discriminator, self.g_optimizer, self.d_optimizer = (
            self.accelerator.prepare(
                self.generator, self.discriminator, self.g_optimizer, self.d_optimizer
            )
        )
        self.objective = LOSSES.get(cfg.train.loss)
        self.state = TrainState()
        self.accelerator.register_for_checkpointing(self.state)
        self._batches = batches
        self.stream_position: StreamPosition | None = None
        self.data_health = DataHealth()
        self._data_totals, self._data_example = (0, 0), ""  # global (skipped, read) at last log
        self._last_saved_step = -1
        self._build_algorithm()
        # The same latent batch for every grid, so samples over time show one evolving set.
        self.fixed_latents = torch.randn(
            cfg.train.num_samples,
            cfg.model.latent_dim,
            generator=torch.Generator().manual_seed(cfg.train.seed),
        ).to(self.device)
        # Conditional grids cycle through the classes: row by row, 0, 1, 2, ...
        self.fixed_labels = (
            torch.arange(cfg.train.num_samples, device=self.device) % self.num_classes
            if self.num_classes
            else None
        )
        self.config_yaml = to_yaml(cfg)

    # ---- construction -------------------------------------------------------------------

    def _build_accelerator(self):
        log_with: list = [JsonlTracker(self.run_dir / METRICS_FILE)]
        if self.cfg.tracking.wandb:
            log_with.append("wandb")
        return build_accelerator(self.cfg.train.mixed_precision, log_with=log_with)

    def _batch_per_rank(self) -> int:
        world = self.accelerator.num_processes
        global_batch = self.cfg.train.batch_size
        if global_batch % world:
            raise ValueError(
                f"train.batch_size={global_batch} is the global batch and must divide evenly by "
                f"the {world} processes; try {global_batch - global_batch % world or world}"
            )
        return global_batch // world

    def _build_models(self) -> None:
        # One seed for initialisation on every rank (DDP also broadcasts rank 0's weights);
        # afterwards each rank draws its own noise from a seed derived from its rank.
        torch.manual_seed(self.cfg.train.seed)
        build = MODELS.get(self.cfg.model.name)
        self.generator, self.discriminator = build(
            self.cfg.model, self.cfg.data.resolution, self.cfg.data.channels
        )
        torch.manual_seed(derive_seed(self.cfg.train.seed, self.accelerator.process_index))

    def _build_optimizers(self) -> None:
        optim = self.cfg.optim
        self.g_optimizer = torch.optim.Adam(
            self.generator.parameters(), lr=optim.g_lr, betas=tuple(optim.betas)
        )
        self.d_optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=optim.d_lr, betas=tuple(optim.betas)
        )

    def _build_algorithm(self) -> None:
        """EMA, loss scalers, LR schedules and augmentation; each registered for checkpoints."""
        cfg = self.cfg
        local_generator = self.accelerator.unwrap_model(self.generator)
        self.num_classes = int(getattr(local_generator, "num_classes", 0))
        self.augment = DiffAugment(cfg.train.augment or "")
        self._lazy_metrics: dict[str, torch.Tensor] = {}
        self.ema: GeneratorEMA | None = None
        if cfg.train.ema_half_life_images > 0:
            self.ema = GeneratorEMA(local_generator, cfg.train.ema_half_life_images)
            self.accelerator.register_for_checkpointing(self.ema)
        # fp16: one GradScaler per network instead of Accelerate's single scaler. Accelerate
        # steps its one scaler (and calls update()) inside both optimizers' step(), so an
        # overflow in G's gradients halves the scale D's loss uses and vice versa, and the
        # growth interval counts both networks' steps. G and D have very different gradient
        # magnitudes; each gets its own scale, skipped steps and growth.
        self.precision = resolve_mixed_precision(cfg.train.mixed_precision)
        self.g_scaler: torch.amp.GradScaler | None = None
        self.d_scaler: torch.amp.GradScaler | None = None
        if self.precision == "fp16":
            self.g_scaler = torch.amp.GradScaler(self.device.type)
            self.d_scaler = torch.amp.GradScaler(self.device.type)
            self.accelerator.register_for_checkpointing(self.g_scaler)
            self.accelerator.register_for_checkpointing(self.d_scaler)
        optim = cfg.optim
        self.schedulers = [
            build_scheduler(opt.optimizer, optim.lr_schedule, optim.warmup_steps, cfg.train.steps)
            for opt in (self.g_optimizer, self.d_optimizer)
        ]
        for scheduler in self.schedulers:
            self.accelerator.register_for_checkpointing(scheduler)
        if cfg.reg.pl_weight > 0 and not hasattr(local_generator, "synthesis"):
            raise ValueError(
                f"reg.pl_weight={cfg.reg.pl_weight} needs a generator with a mapping and a "
                f"synthesis network (model.name=stylegan2), not model.name={cfg.model.name}"
            )

    def _data_iterator(self) -> Iterator[dict[str, Any]]:
        if self._batches is not None:
            return iter(self._batches)
        if self.accelerator.process_index == 0:
            # Rank 0 carries the run's totals on, so the sums over ranks continue across resumes.
            self.data_health.num_skipped, self.data_health.num_read = self.state.data_counts
        num_roles = max(1, self.cfg.data.num_workers)
        self.stream_position = self._saved_stream_position(num_roles)
        seed = self.cfg.train.seed
        if self.stream_position is None:
            self.stream_position = StreamPosition.start(num_roles)
            if self.state.step > 0:
                # The saved position does not fit this launch: read a fresh order rather than
                # replaying the first batches of the run.
                seed = derive_seed(seed, self.state.step)
        loader = build_loader(
            self.cfg.data,
            batch_size=self.batch_per_rank,
            rank=self.accelerator.process_index,
            world_size=self.accelerator.num_processes,
            seed=seed,
            position=self.stream_position,
        )
        return self.data_health.track(_isolated_from_global_rng(iter(loader)))

    def _saved_stream_position(self, num_roles: int) -> StreamPosition | None:
        rows = self.state.data_positions
        if not rows:
            return None
        if len(rows) != self.accelerator.num_processes or len(rows[0]) != 1 + 2 * num_roles:
            if self.is_main:
                log.warning(
                    "the checkpoint's data position was saved with %d ranks and another worker "
                    "count; the stream restarts in a fresh order (samples may repeat this epoch)",
                    len(rows),
                )
            return None
        return StreamPosition.from_list(rows[self.accelerator.process_index])

    def _gather_data_state(self) -> None:
        """Every rank's stream position and the bad-data totals, for the checkpoint (collective)."""
        if self.stream_position is None:
            return
        local = torch.tensor([self.stream_position.to_list()], device=self.device)
        self.state.data_positions = self.accelerator.gather(local).tolist()
        health = self.data_health
        counts = torch.tensor([health.num_skipped, health.num_read], device=self.device)
        self.state.data_counts = self.accelerator.reduce(counts, reduction="sum").tolist()

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    # ---- the two phases -----------------------------------------------------------------

    def _latents(self, batch_size: int) -> torch.Tensor:
        return torch.randn(batch_size, self.cfg.model.latent_dim, device=self.device)

    def _fake_labels(self, batch_size: int) -> torch.Tensor | None:
        """Uniform class labels [B] for generated images, or None for unconditional models."""
        if not self.num_classes:
            return None
        return torch.randint(0, self.num_classes, (batch_size,), device=self.device)

    def autocast(self):
        """The mixed-precision context of both phases.

        Accelerate turns fp16 autocast on only on CUDA; torch also runs fp16 autocast on CPU,
        which lets the fp16 code path (separate scalers, scaled penalties) run in CPU tests.
        """
        if self.precision == "fp16" and self.device.type != "cuda":
            return torch.autocast(self.device.type, dtype=torch.float16)
        return self.accelerator.autocast()

    def _critic(
        self, discriminator: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        """D's logits [B] on augmented images; the same DiffAugment for real and fake."""
        if self.augment:
            images = self.augment(images)
        return discriminator(images) if labels is None else discriminator(images, labels)

    def _next_real_batch(
        self, data: Iterator[dict[str, Any]]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch = next(data)
        if self.stream_position is not None:
            self.stream_position.advance(batch)
        real_images = batch["image"].to(self.device, non_blocking=True)
        assert real_images.shape[0] == self.batch_per_rank, "every rank needs full batches"
        if not self.num_classes:
            return real_images, None
        labels = batch.get("label")
        if labels is None or bool((labels < 0).any()):
            raise ValueError(
                f"model.name={self.cfg.model.name} is class-conditional but the shards in "
                f"data.shards={self.cfg.data.shards} hold samples without a class label (no "
                "'cls' entry): write labelled shards (`gandist data synth glyphs` does) or "
                "choose an unconditional model"
            )
        if bool((labels >= self.num_classes).any()):
            raise ValueError(
                f"the shards hold class label {int(labels.max())} but model.num_classes="
                f"{self.num_classes}: set model.num_classes to the number of classes"
            )
        return real_images, labels.to(self.device, non_blocking=True)

    def _update(
        self,
        loss: torch.Tensor,
        optimizer: Any,
        scaler: torch.amp.GradScaler | None,
        model: torch.nn.Module,
    ) -> dict[str, torch.Tensor]:
        """Backward, optional clipping and the optimizer step, with this network's own scaler."""
        metrics: dict[str, torch.Tensor] = {}
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            self.accelerator.backward(loss)
        else:
            scaler.scale(loss).backward()
        clip = self.cfg.optim.grad_clip_norm
        if clip > 0:
            if scaler is not None:
                scaler.unscale_(optimizer.optimizer)  # clip the true gradients, not scaled ones
            metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if scaler is None:
            optimizer.step()
        else:
            # The wrapped torch optimizer: Accelerate's wrapper would step its shared scaler.
            scaler.step(optimizer.optimizer)
            scaler.update()
            metrics["loss_scale"] = torch.tensor(scaler.get_scale())
        return metrics

    def d_step(
        self,
        real_images: torch.Tensor,
        real_labels: torch.Tensor | None = None,
        d_step_index: int = 0,
    ) -> dict[str, torch.Tensor]:
        """One discriminator update; G runs without a graph, so no G gradients are formed.

        Penalties differentiate D's local module (not its DDP wrapper) with autograd.grad and
        are added to the loss, so one backward carries them and DDP all-reduces the sum once.
        """
        batch_size = real_images.shape[0]
        fake_labels = self._fake_labels(batch_size)
        with torch.no_grad(), self.autocast():
            fake_images = generate(self.generator, self._latents(batch_size), fake_labels)
        with self.autocast():
            real_logits = self._critic(self.discriminator, real_images, real_labels)
            fake_logits = self._critic(self.discriminator, fake_images, fake_labels)
            loss, metrics = self.objective.d_loss(real_logits, fake_logits)
        penalty, penalty_metrics = self._d_penalties(
            real_images, real_labels, fake_images, fake_labels, d_step_index
        )
        update_metrics = self._update(
            loss + penalty, self.d_optimizer, self.d_scaler, self.discriminator
        )
        clip = self.cfg.reg.weight_clip
        if clip > 0:
            with torch.no_grad():
                for param in self.discriminator.parameters():
                    param.clamp_(-clip, clip)
        metrics["real_diversity"] = sample_diversity(real_images)
        return {
            "d_loss": loss.detach(),
            **metrics,
            **penalty_metrics,
            **{f"d_{k}": v for k, v in update_metrics.items()},
        }

    def _d_penalties(
        self,
        real_images: torch.Tensor,
        real_labels: torch.Tensor | None,
        fake_images: torch.Tensor,
        fake_labels: torch.Tensor | None,
        d_step_index: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        reg = self.cfg.reg
        local_d = self.accelerator.unwrap_model(self.discriminator)
        grad_scale = self.d_scaler.get_scale() if self.d_scaler is not None else 1.0
        total = torch.zeros((), device=self.device)
        metrics: dict[str, torch.Tensor] = {}
        if reg.gp_weight > 0:
            # Interpolates pair real and fake images of the same index; conditional critics
            # see the real labels (WGAN-GP is unconditional in the paper).
            points = interpolate(real_images, fake_images)
            with self.autocast():
                logits = self._critic(local_d, points, real_labels)
            penalty, m = gradient_penalty(points, logits, grad_scale)
            total = total + reg.gp_weight * penalty
            metrics |= m
        if reg.r1_gamma > 0 and d_step_index % reg.r1_every == 0:
            reals = real_images.detach().requires_grad_(True)
            with self.autocast():
                logits = self._critic(local_d, reals, real_labels)
            penalty, m = r1_penalty(reals, logits, grad_scale)
            # Lazy regularisation: every r1_every steps, r1_every times as strong.
            total = total + (reg.r1_gamma / 2) * reg.r1_every * penalty
            self._lazy_metrics |= m
        # Lazy penalties report their latest value on every step, so a log window's mean is
        # not diluted by the steps that skipped them.
        return total, metrics | {k: v for k, v in self._lazy_metrics.items() if k == "r1"}

    def g_step(self, batch_size: int, g_step_index: int = 0) -> dict[str, torch.Tensor]:
        """One generator update through a frozen D.

        D's unwrapped module is used: through its DDP wrapper, DDP would expect gradients for
        D's parameters that a frozen D never produces, and stall the next D step.
        """
        discriminator = self.accelerator.unwrap_model(self.discriminator)
        discriminator.requires_grad_(False)
        try:
            labels = self._fake_labels(batch_size)
            with self.autocast():
                fake_images = generate(self.generator, self._latents(batch_size), labels)
                fake_logits = self._critic(discriminator, fake_images, labels)
                loss, metrics = self.objective.g_loss(fake_logits)
            penalty, penalty_metrics = self._g_penalties(batch_size, g_step_index)
            update_metrics = self._update(
                loss + penalty, self.g_optimizer, self.g_scaler, self.generator
            )
        finally:
            discriminator.requires_grad_(True)
        if self.ema is not None:
            global_batch = batch_size * self.accelerator.num_processes
            self.ema.update(self.accelerator.unwrap_model(self.generator), global_batch)
        metrics["sample_diversity"] = sample_diversity(fake_images)
        return {
            "g_loss": loss.detach(),
            **metrics,
            **penalty_metrics,
            **{f"g_{k}": v for k, v in update_metrics.items()},
        }

    def _g_penalties(
        self, batch_size: int, g_step_index: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        reg = self.cfg.reg
        local_g = self.accelerator.unwrap_model(self.generator)
        total = torch.zeros((), device=self.device)
        metrics: dict[str, torch.Tensor] = {}
        if reg.ortho_weight > 0:
            weights_fn = getattr(local_g, "regularized_weights", None)
            weights = weights_fn() if weights_fn is not None else conv_weights(local_g)
            penalty, metrics = orthogonal_penalty(weights)
            total = total + reg.ortho_weight * penalty
        if reg.pl_weight > 0 and g_step_index % reg.pl_every == 0:
            grad_scale = self.g_scaler.get_scale() if self.g_scaler is not None else 1.0
            # Half the batch, as in StyleGAN2: the penalty only needs a mean path length.
            ws = local_g.mapping(self._latents(max(1, batch_size // 2)))
            with self.autocast():
                images = local_g.synthesis(ws)
            penalty, m = path_length_penalty(images, ws, local_g.pl_mean, grad_scale=grad_scale)
            with torch.no_grad():
                # A step whose fp16 gradients overflowed is skipped; keep its inf out of the target.
                new_mean = m.pop("pl_mean")
                local_g.pl_mean.copy_(torch.where(new_mean.isfinite(), new_mean, local_g.pl_mean))
            total = total + reg.pl_weight * reg.pl_every * penalty
            self._lazy_metrics |= m | {"pl": penalty.detach()}
        lazy = {k: v for k, v in self._lazy_metrics.items() if k in ("pl", "pl_length")}
        return total, metrics | lazy

    def train_step(self, data: Iterator[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """`train.n_critic` D steps on fresh real batches, one G step, then the LR schedules."""
        n_critic = self.cfg.train.n_critic
        metrics: dict[str, torch.Tensor] = {}
        for i in range(n_critic):
            real_images, real_labels = self._next_real_batch(data)
            metrics = self.d_step(real_images, real_labels, self.state.step * n_critic + i)
        metrics |= self.g_step(self.batch_per_rank, self.state.step)
        for scheduler in self.schedulers:
            scheduler.step()
        return metrics

    # ---- the loop -----------------------------------------------------------------------

    def train(self) -> TrainState:
        """Run until `train.steps`, resuming first if asked; returns the final counters."""
        cfg = self.cfg.train
        self._resume()
        self._start_tracking()
        self._build_evaluator()
        data = self._data_iterator()
        # Real images consumed per step (n_critic D steps per step).
        global_batch = self.batch_per_rank * self.accelerator.num_processes * cfg.n_critic
        sums: dict[str, torch.Tensor] = {}
        window_steps, window_start = 0, time.perf_counter()
        progress = tqdm(
            total=cfg.steps,
            initial=self.state.step,
            disable=not (self.is_main and cfg.progress_bar),
            dynamic_ncols=True,
        )
        stop = preemption.StopRequest.from_env().install()
        while self.state.step < cfg.steps:
            metrics = self.train_step(data)
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value
            self.state.step += 1
            self.state.images_seen += global_batch
            window_steps += 1
            progress.update(1)

            step, last = self.state.step, self.state.step == cfg.steps
            if step % cfg.log_every == 0 or last:
                elapsed = time.perf_counter() - window_start
                logged = self._log_scalars(
                    sums, window_steps, window_steps * global_batch / elapsed
                )
                progress.set_postfix(
                    d=f"{logged['train/d_loss']:.3f}", g=f"{logged['train/g_loss']:.3f}"
                )
                self._check_data_health()
                sums, window_steps, window_start = {}, 0, time.perf_counter()
            if step % cfg.sample_every == 0 or last:
                self.save_samples()
            if step % cfg.checkpoint_every == 0 or last:
                self.save_checkpoint()
                window_start = time.perf_counter()  # keep save time out of images/s
            if self._maybe_evaluate(last):
                window_start = time.perf_counter()  # keep evaluation time out of images/s
            if not last and step % cfg.stop_check_every == 0 and stop.agreed(self.accelerator):
                self._checkpoint_and_stop(stop)
                break
        stop.close()
        progress.close()
        self.accelerator.end_training()
        if self.is_main:
            log.info("run finished: %s", self.run_dir.resolve())
        return self.state

    def _log_scalars(
        self, sums: dict[str, torch.Tensor], num_steps: int, images_per_s: float
    ) -> dict[str, float]:
        # The only cross-rank reduction of the loop, paid once per log interval.
        keys = sorted(sums)
        local = (
            torch.stack([torch.as_tensor(sums[k], dtype=torch.float32) for k in keys]) / num_steps
        )
        means = self.accelerator.reduce(local.to(self.device), reduction="mean").tolist()
        values = {f"train/{k}": v for k, v in zip(keys, means, strict=True)}
        values["train/images_seen"] = self.state.images_seen
        values["perf/images_per_s"] = images_per_s
        values |= self._data_health_values()
        self.accelerator.log(values, step=self.state.step)
        return values

    def _data_health_values(self) -> dict[str, float]:
        """`data/skipped` and `data/bad_fraction` summed over ranks (a collective, at log steps).

        Each rank also logs the shard and key of every sample it skipped since the last call.
        """
        if self._batches is not None:
            return {}
        health = self.data_health
        local = torch.tensor([health.num_skipped, health.num_read], dtype=torch.float64)
        reduced = self.accelerator.reduce(local.to(self.device), reduction="sum").tolist()
        self._data_totals = (int(reduced[0]), int(reduced[1]))
        self._data_example = ""
        for url, key, reason in health.drain():
            self._data_example = self._data_example or f"{url} key={key or '?'}: {reason}"
            log.warning(
                "data/skipped: rank %d shard %s key %s: %s",
                self.accelerator.process_index,
                url,
                key or "?",
                reason,
            )
        num_skipped, num_read = self._data_totals
        return {"data/skipped": num_skipped, "data/bad_fraction": num_skipped / max(1, num_read)}

    def _check_data_health(self) -> None:
        """Stop on too much bad data, on every rank at the same step (the counts are global)."""
        num_skipped, num_read = self._data_totals
        check_bad_fraction(
            num_skipped, num_read, self.cfg.data.max_bad_fraction, self._data_example
        )

    # ---- evaluation (FID / KID / IS, gandist.metrics) ------------------------------------

    def _build_evaluator(self) -> None:
        """Load the extractor and the reference statistics before the first step (eval.every or
        eval.every_images > 0)."""
        self.evaluator = self.eval_pacer = None
        if not self.cfg.eval.enabled:
            return
        from gandist.metrics.evaluate import EvalPacer, Evaluator

        self.evaluator = Evaluator(self.cfg.eval, self.cfg.data, self.device)
        self.evaluator.prepare()
        by_images = self.cfg.eval.every_images > 0
        self.eval_pacer = EvalPacer(
            self.cfg.eval.every_images if by_images else self.cfg.eval.every,
            self.cfg.eval.max_share,
            estimate_s=self.evaluator.estimate_s(self.sampling_generator()),
            start_at=self._eval_progress(),
            unit="images" if by_images else "steps",
        )
        best = checkpoint.best_checkpoint(self.run_dir)
        best_info = json.loads((best / checkpoint.BEST).read_text()) if best else {}
        self.best_fid = float(best_info.get("fid", float("inf")))
        self.accelerator.log(
            {
                "perf/eval_reference_s": self.evaluator.reference_s,
                "eval/reference_cache_hit": int(bool(self.evaluator.cache_hit)),
                "eval/num_real": self.evaluator.reference.num,
            },
            step=self.state.step,
        )

    def _eval_progress(self) -> int:
        """How far training is in the unit evaluations are paced in: steps, or global images
        seen (eval.every_images), the same count on every rank."""
        return self.state.images_seen if self.cfg.eval.every_images > 0 else self.state.step

    def _maybe_evaluate(self, last: bool) -> bool:
        """Evaluate when due and within eval.max_share of wall time; True when it ran."""
        pacer, step, progress = self.eval_pacer, self.state.step, self._eval_progress()
        if pacer is None or not (pacer.due(progress) or last):
            return False
        if not pacer.decide(progress, self.evaluator.ranks):
            if self.is_main:
                log.info(
                    "evaluation postponed to %d %s (eval.max_share)", pacer.next_at, pacer.unit
                )
            return False
        generator = self.sampling_generator()
        results = self.evaluator.evaluate(generator)
        pacer.record(results["perf/eval_s"])
        results["perf/eval_share"] = pacer.share()
        if results["eval/fid"] < self.best_fid:
            self.best_fid = results["eval/fid"]
            if self.cfg.eval.keep_best:
                self._keep_best(results)
        results["eval/best_fid"] = self.best_fid
        self.accelerator.log(results, step=step)
        if self.is_main:
            log.info(
                "step %d: %s",
                step,
                " ".join(f"{k.split('/')[1]}={v:.4g}" for k, v in results.items()),
            )
        return True

    def _keep_best(self, results: dict[str, float]) -> None:
        """Mark this step's checkpoint (saved now unless the loop just did) as the run's best:
        resumable, kept by pruning, and found by `checkpoint.best_checkpoint`."""
        step = self.state.step
        if self._last_saved_step == step:
            path = checkpoint.checkpoint_root(self.run_dir) / f"step-{step:08d}"
        else:
            path = self.save_checkpoint()
        if self.is_main:
            info = {k.split("/")[1]: v for k, v in results.items() if k.startswith("eval/")}
            checkpoint.mark_best(self.run_dir, path, step=step, **info)

    def sampling_generator(self) -> torch.nn.Module:
        """The generator used for sample grids, evaluation and export: the EMA when enabled,
        else the trained generator unwrapped from DDP."""
        if self.ema is not None:
            return self.ema.module
        return self.accelerator.unwrap_model(self.generator)

    @torch.no_grad()
    def save_samples(self) -> Path | None:
        """Write a grid from the fixed latents to samples/ and the trackers (main process only)."""
        if not self.is_main:
            return None
        generator = self.sampling_generator()
        was_training = generator.training
        generator.eval()
        with self.accelerator.autocast():
            images = generate(generator, self.fixed_latents, self.fixed_labels)
        generator.train(was_training)
        path = self.run_dir / "samples" / f"step-{self.state.step:08d}.png"
        grid = image_grid(images, path)
        if self.cfg.tracking.wandb:
            log_image(self.accelerator, "samples", grid, self.state.step)
        return path

    def _checkpoint_and_stop(self, stop: preemption.StopRequest) -> None:
        """Every rank stops after this step: save (unless this step just did) and acknowledge."""
        reason = stop.requested_locally() or "asked on another rank"
        if self._last_saved_step != self.state.step:
            self.save_checkpoint()
        if self.is_main:
            stop.acknowledge(self.state.step)
            log.warning(
                "stopped at step %d on request (%s); resume=latest continues from here",
                self.state.step,
                reason,
            )

    def save_checkpoint(self) -> Path:
        self._last_saved_step = self.state.step
        self._gather_data_state()
        modules = {"generator": self.generator, "discriminator": self.discriminator}
        if self.ema is not None:
            modules["generator_ema"] = self.ema.module
        assert_ranks_in_sync(self.accelerator, modules)
        path = checkpoint.save_checkpoint(
            self.accelerator,
            self.run_dir,
            self.state.step,
            self.sampling_generator(),
            self.config_yaml,
            keep=self.cfg.train.checkpoints_total_limit,
        )
        if self.is_main:
            log.info("saved checkpoint %s", path)
        return path

    def _resume(self) -> None:
        path = checkpoint.resolve_resume(self.cfg.resume, self.run_dir)
        if path is None:
            if self.cfg.resume == "latest" and self.is_main:
                log.info("resume=latest: no checkpoint in %s yet, starting fresh", self.run_dir)
            return
        checkpoint.check_resume_compatible(path, self.config_yaml)
        self.accelerator.load_state(str(path))
        if self.is_main:
            log.info("resumed from %s at step %d", path, self.state.step)

    def _run_info(self) -> dict[str, Any]:
        """How this run was launched, for a reader of the run directory."""
        return {
            "world_size": self.accelerator.num_processes,
            "distributed_type": str(self.accelerator.distributed_type),
            "device": str(self.device),
            "mixed_precision": self.cfg.train.mixed_precision,
            "precision": self.precision,
            "batch_per_rank": self.batch_per_rank,
            "resumed_at_step": self.state.step,
            "gandist": __version__,
            "torch": torch.__version__,
        }

    def _start_tracking(self) -> None:
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / checkpoint.CONFIG_FILE).write_text(self.config_yaml)
            (self.run_dir / RUN_INFO_FILE).write_text(json.dumps(self._run_info(), indent=2) + "\n")
        init_kwargs: dict[str, Any] = {}
        if self.cfg.tracking.wandb and self.is_main:
            tracking = self.cfg.tracking
            init_kwargs["wandb"] = {
                "dir": str(self.run_dir),
                "name": self.cfg.run_name,
                "mode": wandb_mode(),
                "entity": tracking.entity,
                "group": tracking.group,
                "tags": list(tracking.tags),
                # One wandb run per run directory: a resumed job appends to it.
                "id": wandb_run_id(self.run_dir),
                "resume": "allow",
            }
        config = to_dict(self.cfg) | {"world_size": self.accelerator.num_processes}
        self.accelerator.init_trackers(
            self.cfg.tracking.project, config=config, init_kwargs=init_kwargs
        )
