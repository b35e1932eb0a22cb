"""`gandist bench quality`: sample quality of every GAN family after the same wall-clock budget,
against the seeds' textbook MLP loop, all scored in one glyph classifier's feature space.

Once (or reused with --work): built-in glyph shards (32 px, read as grayscale) and the glyph
classifier (`gandist.bench.coverage.prepare`). Then, per config, `gandist train CONFIG
--num-processes N` on those glyphs, stopped through its stop file (GANDIST_STOP_FILE) once
`budget_s` seconds have passed since its first training step ended (the run checkpoints at the
next step and exits). The same budget goes to the plain loop of the first seed blog post (an MLP
GAN with BCE and Adam, written for 28 px MNIST, here at 32x32x1) in one process with N threads.
Every generator (a run's evaluation generator: its EMA when it keeps one) is scored by one
Evaluator: the same latents, the same real reference, domain FID, precision and recall
(torch-fidelity `prc`) and class coverage with the smallest and largest class share.

With `before=REV` every config also trains as it was at that commit of this repository, with
that commit's code (`git archive` unpacked into the work folder, first on PYTHONPATH), and its
generator writes the Evaluator's samples there (the same latents and labels, SAMPLES_SCRIPT); the
Evaluator in this process scores them (`Replay`), so a row before and a row now differ only in
the code and config that trained them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandist.bench.coverage import prepare
from gandist.bench.train import training_command

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIGS = [
    f"configs/{name}.yaml"
    for name in ("mlp", "dcgan", "conditional", "wgan", "wgan-gp", "sngan", "biggan", "stylegan2")
]
BASELINE = "seeds' MLP loop"
START_TIMEOUT_S = 900.0
"""Longest wait for a run's first training step (imports, process group, data workers)."""
STOP_TIMEOUT_S = 300.0
"""Longest wait for a run to checkpoint and exit once its stop file asks it to."""
FIRST_STEP = re.compile(r"(?:\bstep |\| *)([1-9]\d*)/(\d+) [(\[]")
"""The main process's plain progress line (`step 1/5000 (0.0%) | ...`), written at the end of
the first step when its output is not a terminal (gandist.training.progress), or the tqdm bar
of older checkouts (`  0%|    | 1/5000 [00:02<...`; the pipe reads its carriage returns as line
ends). Step 0 (the bar drawn before training) does not count."""
STOPPED = re.compile(r"^stopped at step (\d+)$", re.MULTILINE)


def run_overrides(shards: Path) -> list[str]:
    """What every family run gets on top of its config: the glyphs in grayscale, no periodic
    evaluation (the bench scores once, after the budget), no wandb, the plain progress line
    that marks the first step, and a stop check every step so each run overshoots the budget
    by at most one step (one all-reduce of a flag per step)."""
    return [
        f"data.shards={shards}",
        "data.channels=1",
        "data.resolution=32",
        "tracking.wandb=false",
        "eval.every=0",
        "eval.every_images=0",
        "train.progress_bar=true",
        "train.stop_check_every=1",
    ]


# ---- scoring ------------------------------------------------------------------------------


class Scorer:
    """One Evaluator for every row: the glyph classifier as the extractor, one cached real
    reference of `num` glyphs, `num` generated samples from the same latents (and, for a
    conditional generator, the same labels spread over the classes)."""

    def __init__(self, shards: Path, classifier: Path, num: int, cache_dir: Path) -> None:
        from gandist.data.config import DataConfig
        from gandist.metrics.config import EvalConfig
        from gandist.metrics.evaluate import Evaluator
        from gandist.metrics.extractors import DOMAIN

        cfg = EvalConfig(
            num_samples=num, num_real=num, batch_size=100, extractor=DOMAIN,
            weights_path=str(classifier), cache_dir=str(cache_dir), precision_recall=True,
        )  # fmt: skip
        data = DataConfig(shards=str(shards), channels=1, resolution=32)
        self.num = num
        self.evaluator = Evaluator(cfg, data)
        self.evaluator.prepare()

    def __call__(self, generator: nn.Module) -> dict[str, float]:
        values = self.evaluator.evaluate(generator, num=self.num)
        return {
            "fid": values["eval/fid"],
            "precision": values["eval/precision"],
            "recall": values["eval/recall"],
            "class_coverage": values["eval/class_coverage"],
            "share_min": values["eval/class_share_min"],
            "share_max": values["eval/class_share_max"],
        }


# ---- another commit's code: its checkout, and its generator's samples played back -----------

SAMPLES_SCRIPT = """
import sys
import torch
from safetensors.torch import save_file
from gandist.metrics.sharded import evaluation_latents
from gandist.models import generate
from gandist.runs.sample import load_generator

run_dir, out, num, seed, batch = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
generator, _ = load_generator(run_dir)
num_classes = int(getattr(generator, "num_classes", 0) or 0)
latents, labels = evaluation_latents(num, int(generator.latent_dim), num_classes, seed)
with torch.no_grad():
    images = torch.cat([
        generate(generator, latents[i : i + batch], None if labels is None else labels[i : i + batch])
        for i in range(0, num, batch)
    ])
tensors = {"latents": latents, "images": images.float().contiguous()}
if labels is not None:
    tensors["labels"] = labels
save_file(tensors, out, metadata={"num_classes": str(num_classes)})
"""
"""Run by the measured checkout's Python (the code of both then and now): the run's generator
(its EMA when it keeps one) on the Evaluator's own latents and labels, `evaluation_latents`."""


def checkout(rev: str, work: Path) -> tuple[Path, str]:
    """This repository's tree at commit `rev`, unpacked once into `work`/source-SHA; and SHA."""
    from gandist.errors import ConfigError

    found = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        capture_output=True, text=True,
    )  # fmt: skip
    if found.returncode != 0:
        raise ConfigError(f"--before {rev}: no such commit in {ROOT} (try a hash from `git log`)")
    sha = found.stdout.strip()
    tree = work / f"source-{sha[:12]}"
    if not (tree / "gandist").is_dir():
        partial = tree.with_name(tree.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha], capture_output=True, check=True)  # fmt: skip
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(partial, filter="data")
        partial.rename(tree)
    return tree, sha


class Replay(nn.Module):
    """Samples that another checkout's generator wrote (SAMPLES_SCRIPT), seen as a generator by
    the Evaluator: each call must bring the next latents (and labels) of the file, in order, and
    gets their images. Anything else raises, so a score never pairs the wrong images."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        super().__init__()
        tensors = load_file(path)
        with safe_open(path, "pt") as f:
            self.num_classes = int(f.metadata()["num_classes"])
        self.latents, self.images = tensors["latents"], tensors["images"]
        self.labels = tensors.get("labels")
        self.latent_dim = self.latents.shape[1]
        self.cursor = 0

    def forward(self, latents: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        start, end = self.cursor, self.cursor + len(latents)
        same = torch.equal(latents, self.latents[start:end])
        if self.labels is not None:
            same = same and labels is not None and torch.equal(labels, self.labels[start:end])
        if not same:
            raise RuntimeError(f"Replay: samples {start}..{end} were drawn for other latents")
        self.cursor = end % len(self.latents)
        return self.images[start:end]


def replayed_generator(run_dir: Path, source: Path, num: int, seed: int = 0) -> Replay:
    """The run's generator as `source`'s code builds it: its samples for the Evaluator's latents."""
    out = run_dir.with_suffix(".samples.safetensors")
    env = os.environ | {"PYTHONPATH": str(source), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", SAMPLES_SCRIPT, str(run_dir), str(out), str(num), str(seed), "100"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{run_dir}: sampling with {source} failed:\n{done.stderr[-2000:]}")
    return Replay(out)


# ---- the families: `gandist train` for a wall-clock budget -----------------------------------


def _stop_group(child: subprocess.Popen, grace_s: float = 60.0) -> None:
    """End a launched run and everything it started: TERM to its process group (`gandist
    train` turns it into its ranks' stop file), KILL after `grace_s`."""
    for signum, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 30.0)):
        if child.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=wait_s)


def _stopped_step(stop_file: Path) -> int | None:
    try:
        found = STOPPED.findall(stop_file.read_text())
    except FileNotFoundError:
        return None
    return int(found[-1]) if found else None


def train_for_budget(
    config: str,
    overrides: list[str],
    num_processes: int,
    run_dir: Path,
    budget_s: float,
    start_timeout_s: float = START_TIMEOUT_S,
    stop_timeout_s: float = STOP_TIMEOUT_S,
    source: Path | None = None,
) -> dict[str, Any]:
    """Train `config` with `gandist train --num-processes N` into `run_dir` for `budget_s`
    seconds counted from the end of its first step, then ask it to stop through its stop file.
    With `source` (another checkout of gandist) that checkout's code trains it.

    Returns steps reached, the configured train.steps, whether the budget (not train.steps)
    ended it, training seconds (end of the first step to the stop checkpoint) and images/s over
    them. The run's console output is kept in `run_dir`.log. Raises RuntimeError (with the
    output's tail) when the run fails, starts no step or does not stop in time; every process
    it started is ended first.
    """
    from gandist.checkpoint import SHARED_FILE
    from gandist.preemption import STOP_FILE_ENV
    from gandist.rundir import find_checkpoint, load_tensors

    if run_dir.exists():  # a run left by an earlier bench here would be resumed, not retrained
        shutil.rmtree(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    stop_file, log_path = run_dir.with_suffix(".stop"), run_dir.with_suffix(".log")
    stop_file.unlink(missing_ok=True)
    command, env = training_command(config, overrides, num_processes, run_dir)
    env[STOP_FILE_ENV] = str(stop_file)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    first: dict[str, float] = {}
    first_step = threading.Event()

    def tail() -> str:
        return "".join(log_path.read_text().splitlines(keepends=True)[-30:])

    with log_path.open("w") as log:
        # Its own session: ending the bench's group (Ctrl-C) reaches the run only through
        # _stop_group, which asks for a checkpointed stop first.
        child = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip

        def follow() -> None:  # drain the pipe into the log; note when step 1 has ended
            assert child.stdout is not None
            for line in child.stdout:
                log.write(line)
                log.flush()
                match = FIRST_STEP.search(line)
                if match and not first_step.is_set():
                    first["time"], first["step"] = time.monotonic(), float(match[1])
                    first_step.set()

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        try:
            launched = time.monotonic()
            while not first_step.wait(0.2):
                if child.poll() is not None:
                    reader.join(5)
                    raise RuntimeError(f"{config}: exited {child.returncode} before its first step:\n{tail()}")  # fmt: skip
                if time.monotonic() - launched > start_timeout_s:
                    raise RuntimeError(f"{config}: no training step after {start_timeout_s:.0f} s:\n{tail()}")  # fmt: skip
            deadline = first["time"] + budget_s
            while child.poll() is None and time.monotonic() < deadline:
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            by_budget = child.poll() is None
            if by_budget:
                stop_file.write_text(f"requested by gandist bench quality after {budget_s:g} s\n")
                asked = time.monotonic()
                while _stopped_step(stop_file) is None and child.poll() is None:
                    if time.monotonic() - asked > stop_timeout_s:
                        raise RuntimeError(f"{config}: did not stop within {stop_timeout_s:.0f} s:\n{tail()}")  # fmt: skip
                    time.sleep(0.05)
            ended = time.monotonic()
            try:
                child.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{config}: did not exit within {stop_timeout_s:.0f} s of its stop:\n{tail()}") from None  # fmt: skip
        finally:
            _stop_group(child)
            reader.join(10)
    if child.returncode != 0:
        raise RuntimeError(f"{config}: exited {child.returncode}:\n{tail()}")
    checkpoint = find_checkpoint(run_dir)
    progress = load_tensors(checkpoint / SHARED_FILE)["progress"]
    steps, images_seen = int(progress["step"]), int(progress["images_seen"])
    train_s = ended - first["time"]
    from gandist.training.config import load_config

    return {
        "steps": steps,
        "train_steps": load_config(checkpoint / "config.yaml").train.steps,
        "stopped_by_budget": by_budget and _stopped_step(stop_file) == steps,
        "train_s": train_s,
        "images_per_s": images_seen / steps * (steps - first["step"]) / train_s,
        "run_dir": str(run_dir),
    }


# ---- the baseline: the first seed blog post's loop -------------------------------------------


class SeedsGenerator(nn.Module):
    """The post's generator: z (100) -> 256 -> 512 -> 1024 -> one flat image, ReLU, Tanh."""

    def __init__(self, latent_dim: int = 100, output_size: int = 32 * 32) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.ReLU(True),
            nn.Linear(256, 512), nn.ReLU(True),
            nn.Linear(512, 1024), nn.ReLU(True),
            nn.Linear(1024, output_size), nn.Tanh(),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class SeedsDiscriminator(nn.Module):
    """The post's discriminator: a flat image -> 1024 -> 512 -> 256 -> 1, LeakyReLU(0.2), Sigmoid."""

    def __init__(self, input_size: int = 32 * 32) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Linear(input_size, 1024), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(1024, 512), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(512, 256), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(256, 1), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class AsImages(nn.Module):
    """A flat-output generator seen as gandist's generators are: latents [B, latent_dim] ->
    images [B, C, H, W] in [-1, 1], with `latent_dim` for the Evaluator."""

    def __init__(self, generator: nn.Module, latent_dim: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.generator, self.latent_dim, self.shape = generator, latent_dim, shape

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z).view(-1, *self.shape)


def load_glyph_images(shards: Path) -> torch.Tensor:
    """Every glyph of the shards, once, as grayscale images [N, 1, 32, 32] in [-1, 1] (the
    post's MNIST dataset also sits in memory: ToTensor and Normalize([0.5], [0.5]))."""
    from gandist.data.config import DataConfig
    from gandist.data.loader import build_loader
    from gandist.data.shards import read_manifest

    count = read_manifest(str(shards))["count"]
    # In order and unshuffled, the stream's first `count` samples are one epoch: each glyph once.
    data = DataConfig(
        shards=str(shards), channels=1, resolution=32, num_workers=0, shuffle_buffer=0
    )
    batches = build_loader(data, batch_size=250, rank=0, world_size=1, seed=0)
    chunks = itertools.islice(batches, math.ceil(count / 250))
    return torch.cat([batch["image"] for batch in chunks])[:count]


def seeds_loop(
    images: torch.Tensor, budget_s: float, seed: int = 0
) -> tuple[nn.Module, dict[str, Any]]:
    """The first seed post's training loop, as written there: BCE on sigmoid outputs, Adam at
    2e-4 (default betas) for both, batch 64 from a shuffled in-memory dataset, a D step on
    real and detached fake images, then a G step on fresh latents; for `budget_s` seconds from
    the end of its first step, in this process. Returns its generator (as images) and figures."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(seed)
    z_dim, batch_size, lr, shape = 100, 64, 0.0002, tuple(images.shape[1:])
    generator = SeedsGenerator(z_dim, math.prod(shape))
    discriminator = SeedsDiscriminator(math.prod(shape))
    criterion = nn.BCELoss()
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=lr)
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr)
    dataloader = DataLoader(
        TensorDataset(images), batch_size=batch_size, shuffle=True, drop_last=True
    )
    real_labels, fake_labels = torch.ones(batch_size, 1), torch.zeros(batch_size, 1)

    def batches() -> Iterator[torch.Tensor]:
        while True:  # the post's epochs, as many as the budget allows
            for (real_images,) in dataloader:
                yield real_images.view(batch_size, -1)

    step, started = 0, None
    for real_images in batches():
        d_loss = criterion(discriminator(real_images), real_labels)
        fake_images = generator(torch.randn(batch_size, z_dim))
        d_loss = d_loss + criterion(discriminator(fake_images.detach()), fake_labels)
        d_optimizer.zero_grad()
        d_loss.backward()
        d_optimizer.step()

        fake_images = generator(torch.randn(batch_size, z_dim))
        g_loss = criterion(discriminator(fake_images), real_labels)
        g_optimizer.zero_grad()
        g_loss.backward()
        g_optimizer.step()
        step += 1
        now = time.monotonic()
        if started is None:
            started = now  # the budget counts from the end of the first step, as for the runs
        elif now - started >= budget_s:
            break
    train_s = time.monotonic() - started
    figures = {
        "steps": step,
        "train_steps": None,
        "stopped_by_budget": True,
        "train_s": train_s,
        "images_per_s": batch_size * (step - 1) / train_s,
    }
    return AsImages(generator, z_dim, shape).eval(), figures


@contextlib.contextmanager
def torch_threads(num: int) -> Iterator[None]:
    saved = torch.get_num_threads()
    torch.set_num_threads(num)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


# ---- the table ---------------------------------------------------------------------------------


def _number(value: Any, fmt: str) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else fmt.format(value)
    )


def format_table(rows: list[dict[str, Any]]) -> str:
    """One markdown table; "beats the seeds' loop" compares each row's FID with the baseline's."""
    baseline = next((r for r in rows if r["family"] == BASELINE and "fid" in r), None)
    lines = [
        "| family | config | steps reached | images/s | domain FID | precision | recall | "
        "class coverage | shares min..max | beats the seeds' loop |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['family']} | {r['config']} | failed: {r['error']} |" + " |" * 7)
            continue
        steps = str(r["steps"]) + ("" if r["stopped_by_budget"] else " (all)")
        if r["family"] == BASELINE:
            beats = "-"
        elif baseline is None:
            beats = "n/a"
        else:
            beats = "yes" if r["fid"] < baseline["fid"] else "no"
        lines.append(
            f"| {r['family']} | {r['config']} | {steps} | {_number(r['images_per_s'], '{:.0f}')} | "
            f"{r['fid']:.1f} | {r['precision']:.3f} | {r['recall']:.3f} | "
            f"{r['class_coverage']:.1f} | {r['share_min']:.3f}..{r['share_max']:.3f} | {beats} |"
        )
    return "\n".join(lines)


def config_path(config: str) -> Path:
    """A config file as given, else the one of that name in this checkout's configs/."""
    from gandist.errors import ConfigError

    for path in (Path(config), ROOT / config):
        if path.is_file():
            return path.resolve()
    raise ConfigError(f"--configs: no config file {config} (e.g. configs/dcgan.yaml)")


@dataclasses.dataclass
class Budget:
    """What every family run shares: where runs go, their overrides, ranks and budget."""

    runs: Path
    overrides: list[str]
    num_processes: int
    budget_s: float


def measure(
    config: str,
    path: Path,
    budget: Budget,
    scorer: Scorer,
    source: tuple[Path, str] | None = None,
) -> dict[str, Any]:
    """One row: `path` trained for the budget by this checkout, or with `source` (a checkout's
    tree and commit) as that commit had it, by that commit's code; its generator scored."""
    from gandist.rundir import find_checkpoint
    from gandist.runs.sample import load_generator
    from gandist.training.config import load_config

    train_path, run_dir, label, tree = path, budget.runs / path.stem, config, None
    if source is not None:
        tree, sha = source
        label, run_dir = f"{config} @ {sha[:7]}", budget.runs / f"{path.stem}@{sha[:7]}"
        inside = path.is_relative_to(ROOT)
        train_path = tree / path.relative_to(ROOT) if inside else tree / "not-in-this-checkout"
    try:
        if not train_path.is_file():
            raise RuntimeError(f"{config}: not in commit {label.split(' @ ')[-1]}")
        figures = train_for_budget(str(train_path), budget.overrides, budget.num_processes, run_dir, budget.budget_s, source=tree)  # fmt: skip
        family = load_config(find_checkpoint(run_dir) / "config.yaml").model.name
        if tree is None:
            generator, _ = load_generator(run_dir)
        else:
            generator = replayed_generator(run_dir, tree, scorer.num)
        return {"family": family, "config": label, **figures, **scorer(generator)}
    except (RuntimeError, ValueError) as err:
        print(str(err), flush=True)
        return {"family": path.stem, "config": label, "error": str(err).splitlines()[0]}


def bench_quality(
    configs: list[str] | None = None,
    overrides: list[str] | None = None,
    budget_s: float = 600.0,
    num_processes: int = 2,
    work: Path | None = None,
    samples: int = 2000,
    json_path: Path | None = None,
    skip_baseline: bool = False,
    glyphs: int = 20000,
    classifier_steps: int = 300,
    before: str | None = None,
) -> list[dict[str, Any]]:
    """Train every config (and the seeds' loop) for `budget_s` seconds, score each, print the
    table and return its rows (a failed run's row holds `error`). With `before` (a commit), each
    config's row follows one of the same config trained by that commit's code."""
    from gandist.errors import ConfigError

    for name, value in (("--budget-s", budget_s), ("--num-processes", num_processes), ("--samples", samples)):  # fmt: skip
        if not value > 0 or (name == "--samples" and value < 2):
            raise ConfigError(f"{name} must be {'>= 2' if name == '--samples' else '> 0'}, got {value}")  # fmt: skip
    paths = [config_path(config) for config in configs or DEFAULT_CONFIGS]
    work = Path(work).resolve() if work else Path(tempfile.mkdtemp(prefix="gandist-quality-"))
    source = checkout(before, work) if before else None  # a wrong commit fails before training
    shards, classifier = prepare(work, glyphs, classifier_steps=classifier_steps)
    scorer = Scorer(shards, classifier, samples, work / "cache")
    common = Budget(work / "quality-runs", [*run_overrides(shards), *(overrides or [])], num_processes, budget_s)  # fmt: skip
    load = os.getloadavg()[0]
    print(
        f"gandist bench quality: {budget_s:g} s of training each (from the end of the first "
        f"step), {num_processes} ranks of 1 thread for the families and one process of "
        f"{num_processes} threads for the seeds' loop, on {os.cpu_count()} CPU cores; "
        f"{samples} samples scored against {samples} real glyphs by {classifier}; load "
        f"average {load:.1f} at the start",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    if not skip_baseline:
        images = load_glyph_images(shards)
        with torch_threads(num_processes):
            generator, figures = seeds_loop(images, budget_s)
        rows.append({"family": BASELINE, "config": "seeds/000 (plain PyTorch)", **figures, **scorer(generator)})  # fmt: skip
        print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    for config, path in zip(configs or DEFAULT_CONFIGS, paths, strict=True):
        for tree in ([source] if source else []) + [None]:  # the commit's config first, then now
            rows.append(measure(config, path, common, scorer, tree))
            print(format_table(rows).splitlines()[-1], flush=True)  # with the baseline: "beats"
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end (started at {load:.1f})")
    print(format_table(rows), flush=True)
    if json_path is not None:
        summary = {
            "budget_s": budget_s, "num_processes": num_processes, "samples": samples,
            "glyphs": glyphs, "cpu_count": os.cpu_count(), "load_start": load,
            "load_end": os.getloadavg()[0], "work": str(work), "rows": rows,
        }  # fmt: skip
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(summary, indent=2) + "\n")
    return rows
