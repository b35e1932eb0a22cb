"""The Trainer: builds each component from its config section and sequences them, step by step."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from gandist import __version__, checkpoint, preemption
from gandist.config import to_dict, to_yaml
from gandist.data.loader import BatchStream, DataStream
from gandist.distributed import (
    assert_ranks_in_sync,
    build_accelerator,
    derive_seed,
    resolve_mixed_precision,
)
from gandist.registry import ALGORITHMS
from gandist.rundir import resolve_resume, write_run_files
from gandist.tracking import Tracker
from gandist.training.algorithm import Phase, Runtime
from gandist.training.config import Config
from gandist.training.evaluation import TrainingEvaluation
from gandist.training.updater import NonFiniteTrainingError, Updater
from gandist.training.window import MetricWindow

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Counters saved with every checkpoint."""

    step: int = 0
    images_seen: int = 0
    skipped_updates: int = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "images_seen": self.images_seen, "skipped": self.skipped_updates}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step, self.images_seen = int(state["step"]), int(state["images_seen"])
        self.skipped_updates = int(state.get("skipped", 0))


class RngState:
    """This rank's RNG states (python, numpy, torch, CUDA) as a checkpoint component."""

    def state_dict(self) -> dict[str, Any]:
        return checkpoint.rng_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        checkpoint.set_rng_state(state)


class Trainer:
    """Trains the GAN a Config describes on every process the launcher started.

    `batches` replaces the shard stream with any iterable of this rank's batches
    ({"image": [B, C, H, W]} dicts holding its share of the global batch; benchmarks, tests).
    """

    def __init__(self, cfg: Config, batches: Iterable[dict[str, Any]] | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.output_dir)
        self.accelerator = build_accelerator(
            cfg.train.mixed_precision, log_with=Tracker.log_with(self.run_dir, cfg.tracking.wandb)
        )
        acc = self.accelerator
        self.precision = resolve_mixed_precision(cfg.train.mixed_precision)
        self.batch_per_rank = self._batch_per_rank()
        # One seed for initialisation on every rank (DDP also broadcasts rank 0's weights);
        # afterwards each rank draws its own noise from a seed derived from its rank.
        torch.manual_seed(cfg.train.seed)
        self.algorithm = ALGORITHMS.get(cfg.train.algorithm)(cfg)
        torch.manual_seed(derive_seed(cfg.train.seed, acc.process_index))
        self._prepare_networks_and_updaters()
        self.algorithm.bind(
            Runtime(
                device=acc.device,
                world_size=acc.num_processes,
                batch_per_rank=self.batch_per_rank,
                autocast=self.autocast,
                unwrap=acc.unwrap_model,
                grad_scale=lambda name: self.updaters[name].grad_scale,
            )
        )
        self.progress = Progress()
        self.data = self._build_data(batches)
        self.tracker = Tracker(acc, self.run_dir, cfg.tracking.wandb)
        self.config_yaml = to_yaml(cfg)
        self._last_saved_step, self._bad_in_a_row = -1, 0

    # ---- construction -------------------------------------------------------------------

    def _batch_per_rank(self) -> int:
        world, global_batch = self.accelerator.num_processes, self.cfg.train.batch_size
        if global_batch % world:
            raise ValueError(
                f"train.batch_size={global_batch} is the global batch and must divide evenly by "
                f"the {world} processes; try {global_batch - global_batch % world or world}"
            )
        return global_batch // world

    def _prepare_networks_and_updaters(self) -> None:
        """DDP-wrap every network, one Adam per optimizer the algorithm declares, one Updater each."""
        cfg, acc, algorithm = self.cfg, self.accelerator, self.algorithm
        names, specs = list(algorithm.networks), algorithm.optimizers()
        optimizers = {
            name: torch.optim.Adam(
                [p for net in spec.networks for p in algorithm.networks[net].parameters()],
                lr=spec.lr,
                betas=spec.betas,
            )
            for name, spec in specs.items()
        }
        prepared = acc.prepare(*algorithm.networks.values(), *optimizers.values())
        algorithm.networks = dict(zip(names, prepared[: len(names)], strict=True))
        self.updaters = {
            name: Updater(
                name,
                optimizer,
                [p for net in specs[name].networks for p in algorithm.networks[net].parameters()],
                acc,
                lr_schedule=cfg.optim.lr_schedule,
                warmup_steps=cfg.optim.warmup_steps,
                total_steps=cfg.train.steps,
                clip_norm=cfg.optim.grad_clip_norm,
                fp16=self.precision == "fp16",
                check_finite=cfg.train.skip_nonfinite,
            )
            for name, optimizer in zip(specs, prepared[len(names) :], strict=True)
        }

    def _build_data(self, batches: Iterable[dict[str, Any]] | None) -> DataStream | BatchStream:
        if batches is not None:
            return BatchStream(batches)
        acc = self.accelerator
        return DataStream(
            self.cfg.data,
            batch_size=self.batch_per_rank,
            rank=acc.process_index,
            world_size=acc.num_processes,
            seed=self.cfg.train.seed,
            reduce_sum=lambda t: acc.reduce(t.to(acc.device), reduction="sum").cpu(),
        )

    def autocast(self):
        """The mixed-precision context of every phase. Accelerate turns fp16 autocast on only
        on CUDA; torch also runs it on CPU, which lets CPU tests run the fp16 code path."""
        if self.precision == "fp16" and self.accelerator.device.type != "cuda":
            return torch.autocast(self.accelerator.device.type, dtype=torch.float16)
        return self.accelerator.autocast()

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def states(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The named checkpoint components: shared by every rank, and this rank's own."""
        unwrap = self.accelerator.unwrap_model
        shared: dict[str, Any] = {"progress": self.progress}
        shared |= {f"network/{n}": unwrap(m) for n, m in self.algorithm.networks.items()}
        shared |= {f"optimizer/{n}": u for n, u in self.updaters.items()}
        shared |= {f"scaler/{n}": u.scaler for n, u in self.updaters.items() if u.scaler}
        shared |= self.algorithm.state()
        return shared, {"rng": RngState(), "data": self.data}

    # ---- the loop -----------------------------------------------------------------------

    def train(self) -> Progress:
        """Run until `train.steps`, resuming first if asked; returns the final counters."""
        cfg = self.cfg.train
        self._resume()
        self._start_tracking()
        evaluation = self._build_evaluation()
        window = MetricWindow()
        progress_bar = tqdm(
            total=cfg.steps,
            initial=self.progress.step,
            disable=not (self.is_main and cfg.progress_bar),
            dynamic_ncols=True,
        )
        stop = preemption.StopRequest.from_env().install()
        while self.progress.step < cfg.steps:
            step = self.progress.step + 1
            self.algorithm.diagnostics = step % cfg.log_every == 0 or step == cfg.steps
            window.add(self.train_step())
            self.progress.step, last = step, step == cfg.steps
            self.progress.images_seen += self.algorithm.images_per_step
            progress_bar.update(1)
            if step % cfg.log_every == 0 or last:
                values = self._log_scalars(window)
                progress_bar.set_postfix(
                    {k[6:]: f"{v:.3f}" for k, v in values.items() if k.endswith("_loss")}
                )
            if step % cfg.sample_every == 0 or last:
                self.tracker.log_samples(self.algorithm.sample(), step)
            if step % cfg.checkpoint_every == 0 or last:
                self.save_checkpoint()
                window.restart_clock()  # keep save time out of images/s
            if evaluation is not None and self._evaluate(evaluation, last):
                window.restart_clock()  # keep evaluation time out of images/s
            if not last and step % cfg.stop_check_every == 0 and stop.agreed(self.accelerator):
                self._checkpoint_and_stop(stop)
                break
        stop.close()
        progress_bar.close()
        self.tracker.finish()
        if self.is_main:
            log.info("run finished: %s", self.run_dir.resolve())
        return self.progress

    def train_step(self) -> dict[str, torch.Tensor]:
        """Every phase of one step, then the learning-rate schedules."""
        metrics: dict[str, torch.Tensor] = {}
        for phase in self.algorithm.phases(self.progress.step):
            metrics |= self.run_phase(phase)
        for updater in self.updaters.values():
            updater.end_step()
        return metrics

    def run_phase(self, phase: Phase) -> dict[str, torch.Tensor]:
        """A fresh real batch if the phase needs one, its loss, its update, the after-update hook."""
        batch = self.data.next_batch() if phase.needs_real else None
        with self.algorithm.trainable(phase):
            loss, metrics = self.algorithm.loss(phase, batch)
            update_metrics, skipped = self.updaters[phase.optimizer].step(loss)
        self.algorithm.after_update(phase, skipped)
        self._count_skip(phase.name, skipped)
        return metrics | update_metrics

    def _count_skip(self, phase: str, skipped: bool) -> None:
        """Count skipped updates; too many in a row stop the run with its last checkpoint intact."""
        if not skipped:
            self._bad_in_a_row = 0
            return
        self.progress.skipped_updates += 1
        self._bad_in_a_row += 1
        if self.precision != "fp16" and self.is_main:  # fp16 skips while it finds its scale
            log.warning(
                "step %d phase %s: non-finite loss or gradient, update skipped on every rank",
                self.progress.step + 1,
                phase,
            )
        if self._bad_in_a_row >= self.cfg.train.max_bad_steps:
            raise NonFiniteTrainingError(
                f"{self._bad_in_a_row} updates in a row had non-finite losses or gradients (last: "
                f"phase {phase} at step {self.progress.step + 1}); stopped without saving. The last "
                f"good checkpoint is kept (resume=latest); lower the learning rates, set "
                "optim.grad_clip_norm, or train in fp32"
            )

    def _log_scalars(self, window: MetricWindow) -> dict[str, float]:
        # The loop's cross-rank reductions, paid once per log interval.
        values = {f"train/{k}": v for k, v in window.reduce(self.accelerator).items()}
        values["train/images_seen"] = self.progress.images_seen
        values["train/skipped_steps"] = self.progress.skipped_updates
        values["perf/images_per_s"] = window.images_per_s(self.algorithm.images_per_step)
        values |= {f"train/lr_{n}": u.learning_rate for n, u in self.updaters.items()}
        values |= self.data.health()
        self.tracker.log_scalars(values, self.progress.step)
        window.clear()
        return values

    def _build_evaluation(self) -> TrainingEvaluation | None:
        if not self.cfg.eval.enabled:
            return None
        evaluation = TrainingEvaluation(
            self.cfg.eval, self.cfg.data, self.accelerator.device, self.run_dir, self.is_main
        )
        at = evaluation.progress(self.progress.step, self.progress.images_seen)
        values = evaluation.prepare(self.algorithm.eval_generator(), at)
        self.tracker.log_scalars(values, self.progress.step)
        return evaluation

    def _evaluate(self, evaluation: TrainingEvaluation, last: bool) -> bool:
        at = evaluation.progress(self.progress.step, self.progress.images_seen)
        result = evaluation.maybe_run(self.algorithm.eval_generator(), at, last)
        if result is None:
            return False
        if result.is_best:
            path = self._saved_now()
            if self.is_main:
                info = {
                    k.split("/")[1]: v for k, v in result.values.items() if k.startswith("eval/")
                }
                checkpoint.mark_best(self.run_dir, path, step=self.progress.step, **info)
        self.tracker.log_scalars(result.values, self.progress.step)
        return True

    # ---- checkpoints --------------------------------------------------------------------

    def _saved_now(self) -> Path:
        """This step's checkpoint, saved now unless the loop just did."""
        if self._last_saved_step == self.progress.step:
            return checkpoint.checkpoint_dir(self.run_dir, self.progress.step)
        return self.save_checkpoint()

    def _checkpoint_and_stop(self, stop: preemption.StopRequest) -> None:
        """Every rank stops after this step: save (unless this step just did) and acknowledge."""
        reason = stop.requested_locally() or "asked on another rank"
        self._saved_now()
        if self.is_main:
            stop.acknowledge(self.progress.step)
            log.warning(
                "stopped at step %d on request (%s); resume=latest continues from here",
                self.progress.step,
                reason,
            )

    def save_checkpoint(self) -> Path:
        shared, per_rank = self.states()
        networks = {k: v for k, v in shared.items() if isinstance(v, torch.nn.Module)}
        for name, module in networks.items():
            if not all(bool(torch.isfinite(p).all()) for p in module.parameters()):
                raise NonFiniteTrainingError(
                    f"{name} has non-finite weights at step {self.progress.step}; not saving it "
                    "over the last good checkpoint (resume=latest continues from that one)"
                )
        assert_ranks_in_sync(self.accelerator, networks)
        self._last_saved_step = self.progress.step
        path = checkpoint.save_checkpoint(
            self.accelerator,
            self.run_dir,
            self.progress.step,
            shared,
            per_rank,
            self.algorithm.eval_generator(),
            self.config_yaml,
            keep=self.cfg.train.checkpoints_total_limit,
        )
        if self.is_main:
            log.info("saved checkpoint %s", path)
        return path

    def _resume(self) -> None:
        path = resolve_resume(self.cfg.resume, self.run_dir)
        if path is None:
            if self.cfg.resume == "latest" and self.is_main:
                log.info("resume=latest: no checkpoint in %s yet, starting fresh", self.run_dir)
            return
        checkpoint.check_resume_compatible(path, self.config_yaml)
        shared, per_rank = self.states()
        checkpoint.load_checkpoint(path, self.accelerator.process_index, shared, per_rank)
        # A resumed run trains with the config it prints: today's rates and betas, not the saved.
        optim, specs = self.cfg.optim, self.algorithm.optimizers()
        changed = [
            c
            for n, u in self.updaters.items()
            for c in u.apply_config(specs[n].lr, specs[n].betas, self.progress.step)
        ]
        if self.is_main:
            if changed:
                log.warning(
                    "resume: optimizer settings from this config applied: %s (schedule %s)",
                    "; ".join(changed),
                    optim.lr_schedule,
                )
            checkpoint.fence_newer_checkpoints(self.run_dir, path)
            log.info("resumed from %s at step %d", path, self.progress.step)
        self.accelerator.wait_for_everyone()

    def _run_info(self) -> dict[str, Any]:
        """How this run was launched, for a reader of the run directory."""
        return {
            "world_size": self.accelerator.num_processes,
            "distributed_type": str(self.accelerator.distributed_type),
            "device": str(self.accelerator.device),
            "mixed_precision": self.cfg.train.mixed_precision,
            "precision": self.precision,
            "batch_per_rank": self.batch_per_rank,
            "resumed_at_step": self.progress.step,
            "gandist": __version__,
            "torch": torch.__version__,
        }

    def _start_tracking(self) -> None:
        if self.is_main:
            write_run_files(self.run_dir, self.config_yaml, self._run_info())
        tracking = self.cfg.tracking
        self.tracker.start(
            tracking.project,
            config=to_dict(self.cfg) | {"world_size": self.accelerator.num_processes},
            wandb_kwargs={
                "name": self.cfg.run_name,
                "entity": tracking.entity,
                "group": tracking.group,
                "tags": list(tracking.tags),
            },
        )
