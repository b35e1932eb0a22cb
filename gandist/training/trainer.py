"""The Trainer: builds each component from its config section and sequences them, step by step."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from gandist import preemption
from gandist.checkpoint import mark_best
from gandist.config import to_yaml
from gandist.data.classes import save_class_names
from gandist.data.health import BadDataError
from gandist.data.loader import Batches, BatchStream
from gandist.distributed import build_accelerator, derive_seed, resolve_mixed_precision
from gandist.registry import ALGORITHMS
from gandist.rundir import write_run_files
from gandist.tracking import Tracker
from gandist.training import run_record as record
from gandist.training.algorithm import Phase, Runtime
from gandist.training.checkpointing import Checkpointer, Progress, RngState
from gandist.training.config import Config
from gandist.training.console import (
    SaturationWatch,
    data_note,
    run_facts,
    startup_summary,
)
from gandist.training.evaluation import TrainingEvaluation
from gandist.training.performance import local_unwrap
from gandist.training.progress import ProgressReport
from gandist.training.runlock import exclusive_run
from gandist.training.updater import NonFiniteGuard, prepare_updaters
from gandist.training.window import MetricWindow

log = logging.getLogger(__name__)


class Trainer:
    """Trains the GAN a Config describes on every process the launcher started.

    `batches` replaces the shard stream with any iterable of this rank's batches
    ({"image": [B, C, H, W]} dicts holding its share of the global batch; benchmarks, tests).
    """

    def __init__(self, cfg: Config, batches: Iterable[dict[str, Any]] | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.output_dir)
        self.accelerator = build_accelerator(
            cfg.train.mixed_precision,
            log_with=Tracker.log_with(self.run_dir, cfg.tracking.wandb),
            timeout_s=cfg.train.dist_timeout_s,
        )
        acc = self.accelerator
        self.precision = resolve_mixed_precision(cfg.train.mixed_precision)
        self.batch_per_rank = self._batch_per_rank()
        # One seed for initialisation on every rank (DDP also broadcasts rank 0's weights);
        # afterwards each rank draws its own noise from a seed derived from its rank.
        torch.manual_seed(cfg.train.seed)
        self.algorithm = ALGORITHMS.get(cfg.train.algorithm)(cfg)
        torch.manual_seed(derive_seed(cfg.train.seed, acc.process_index))
        self.updaters = prepare_updaters(
            self.algorithm, acc, cfg.optim, cfg.train, fp16=self.precision == "fp16"
        )
        self.algorithm.bind(
            Runtime(
                device=acc.device,
                world_size=acc.num_processes,
                batch_per_rank=self.batch_per_rank,
                autocast=self.autocast,
                unwrap=local_unwrap(acc),
                grad_scale=lambda name: self.updaters[name].grad_scale,
            )
        )
        self.progress = Progress()
        self.data = self._build_data(batches)
        self.tracker = Tracker(acc, self.run_dir, cfg.tracking.wandb, cfg.data.sample_rate)
        self.config_yaml = to_yaml(cfg)
        self.checkpointer = Checkpointer(
            acc, self.run_dir, self.config_yaml, cfg.train.checkpoints_total_limit
        )
        self.guard = NonFiniteGuard(cfg.train.max_bad_steps, warn=self.precision != "fp16")
        self.saturation = SaturationWatch()
        self.window = MetricWindow()

    # ---- construction -------------------------------------------------------------------

    def _batch_per_rank(self) -> int:
        world, global_batch = self.accelerator.num_processes, self.cfg.train.batch_size
        if global_batch % world:
            raise ValueError(
                f"train.batch_size={global_batch} is the global batch and must divide evenly by "
                f"the {world} processes; try {global_batch - global_batch % world or world}"
            )
        return global_batch // world

    def _build_data(self, batches: Iterable[dict[str, Any]] | None) -> Batches:
        if batches is not None:
            return BatchStream(batches)
        acc = self.accelerator
        return self.algorithm.build_stream(
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
        shared: dict[str, Any] = {"progress": self.progress}
        shared |= {f"network/{n}": self.algorithm.local(n) for n in self.algorithm.networks}
        shared |= {f"optimizer/{n}": u for n, u in self.updaters.items()}
        shared |= {f"scaler/{n}": u.scaler for n, u in self.updaters.items() if u.scaler}
        shared |= self.algorithm.state()
        return shared, {"rng": RngState(), "data": self.data, **self.algorithm.rank_state()}

    def save_checkpoint(self) -> Path:
        return self.checkpointer.save(
            self.progress.step, *self.states(), self.algorithm.eval_generator()
        )

    def _saved_now(self) -> Path:
        return self.checkpointer.saved_now(
            self.progress.step, *self.states(), self.algorithm.eval_generator()
        )

    # ---- the loop -----------------------------------------------------------------------

    def train(self) -> Progress:
        """Run until `train.steps`, resuming first if asked; returns the final counters."""
        # One job per run directory (locked before anything is written); a lost rank is named.
        with exclusive_run(self.accelerator, self.run_dir):
            return self._train()

    def _train(self) -> Progress:
        cfg = self.cfg.train
        self._resume()
        self._start_tracking()
        evaluation = self._build_evaluation()
        window = self.window
        window.clear()
        report = ProgressReport(
            cfg.steps, self.progress.step, self.is_main and cfg.progress_bar, cfg.progress_every_s
        )
        stop = preemption.StopRequest.from_env().install()
        try:
            while self.progress.step < cfg.steps:
                step = self.progress.step + 1
                self.algorithm.diagnostics = step % cfg.log_every == 0 or step == cfg.steps
                window.add(self.train_step())
                self.progress.step, last = step, step == cfg.steps
                self.progress.images_seen += self.algorithm.images_per_step
                logs = step % cfg.log_every == 0 or last
                report.update(step, self._log_scalars(window) if logs else None)
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
            self.tracker.finish()  # under the stop handlers: a late signal is only logged
        finally:  # an error must not leave this process's signal handlers replaced
            stop.close()
            report.close()
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
        with self.window.waiting_for_data():
            batch = self.data.next_batch() if phase.needs_real else None
        with self.algorithm.trainable(phase):
            loss, metrics = self.algorithm.loss(phase, batch)
            update_metrics, skipped = self.updaters[phase.optimizer].step(loss)
        self.algorithm.after_update(phase, skipped)
        self.progress.skipped_updates += int(skipped)
        self.guard.record(skipped, phase.name, self.progress.step + 1)
        return metrics | update_metrics

    def _log_scalars(self, window: MetricWindow) -> dict[str, float]:
        # The loop's cross-rank reductions, paid once per log interval.
        # Keys an algorithm already namespaced (`aug/p`) keep their namespace.
        values = {
            k if "/" in k else f"train/{k}": v for k, v in window.reduce(self.accelerator).items()
        }
        values["train/images_seen"] = self.progress.images_seen
        values["train/hours"] = self.progress.hours
        values["train/skipped_steps"] = self.progress.skipped_updates
        values |= window.perf(self.accelerator, self.algorithm.images_per_step)
        values |= {f"train/lr_{n}": u.learning_rate for n, u in self.updaters.items()}
        try:
            values |= self.data.health()
        except BadDataError as err:  # log the step that crossed the limit, then stop
            self.tracker.log_scalars(values | err.values, self.progress.step)
            raise
        self.tracker.log_scalars(values, self.progress.step)
        if (warning := self.saturation.update(values, self.progress.step)) and self.is_main:
            log.warning("%s", warning)
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
                mark_best(self.run_dir, path, step=self.progress.step, **info)
        self.tracker.log_scalars(result.values, self.progress.step)
        return True

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

    def _resume(self) -> None:
        path = self.checkpointer.resume(self.cfg.resume, *self.states())
        if path is None:
            return
        # A resumed run trains with the config it prints: today's rates and betas, not the saved.
        specs = self.algorithm.optimizers()
        changed = [
            change
            for name, updater in self.updaters.items()
            for change in updater.apply_config(
                specs[name].lr, specs[name].betas, self.progress.step
            )
        ]
        if self.is_main and changed:
            log.warning("resume: this config's optimizer settings applied: %s", "; ".join(changed))
        if self.is_main:
            log.info("resumed from %s at step %d", path, self.progress.step)

    def _start_tracking(self) -> None:
        acc, cfg = self.accelerator, self.cfg
        run_info = run_facts(acc, cfg, self.precision, self.batch_per_rank, self.progress.step)
        if self.is_main:
            write_run_files(self.run_dir, self.config_yaml, run_info)
            save_class_names(self.run_dir, cfg.data.shards)
        config, wandb_kwargs = record.tracked_config(cfg, run_info), record.wandb_kwargs(cfg)
        self.tracker.start(cfg.tracking.project, config=config, wandb_kwargs=wandb_kwargs)
        if self.is_main:
            networks = {name: self.algorithm.local(name) for name in self.algorithm.networks}
            print(startup_summary(run_info, cfg, networks, data_note(cfg.data)), flush=True)
