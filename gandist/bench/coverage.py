"""Benchmark: which settings make the demo draw every digit? Class coverage and domain FID per variant.

`python -m gandist.bench.coverage --steps 2000` writes built-in glyph shards and trains the
glyph classifier once (in a temporary folder, or --work), then trains configs/demo.yaml (one
process, same seed and steps) once per variant and prints, per run, the class histogram of
2000 generated samples by the classifier, `class_coverage` (the fraction of the 10 digits
within a factor of two of uniform) and the final domain FID (the classifier's features, as the
demo scores). A variant is a name and config overrides:

    python -m gandist.bench.coverage --steps 2000 --config configs/demo.yaml \\
        --variant before train.ema_half_life_images=0 --variant now

A benchmark, not a test: figures depend on steps, seed and data size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def prepare(work: Path, num: int, classifier_steps: int = 300) -> tuple[Path, Path]:
    """Glyph shards (`num` glyphs, 32 px) and the glyph classifier trained on them in
    grayscale, in `work`; both are reused when already there."""
    from gandist.data.shards import write_manifest, write_shards
    from gandist.data.synthetic import glyph_samples
    from gandist.metrics.domain import train_classifier

    shards, classifier = work / "glyphs", work / "glyph-classifier.pt"
    if not (shards / "manifest.json").is_file():
        written = write_shards(glyph_samples(num, size=32, seed=1), shards, "glyphs", 1000)
        write_manifest(shards, written, kind="image", count=num, resolution=32)
    if not classifier.is_file():
        train_classifier(
            str(shards), classifier, channels=1, steps=classifier_steps, progress=False
        )
    return shards, classifier


@torch.no_grad()
def coverage_of(run_dir: Path, classifier_path: Path, num: int) -> tuple[float, list[float]]:
    """Class coverage and class shares of `num` samples of the run's evaluation generator
    (the EMA when it has one), at the run's eval.truncation."""
    from gandist.metrics.coverage import class_coverage, class_histogram
    from gandist.metrics.domain import load_classifier
    from gandist.models import generate
    from gandist.runs.sample import load_generator

    generator, cfg = load_generator(run_dir)
    classifier, _ = load_classifier(classifier_path)
    classifier.eval()
    latents = torch.randn(num, cfg.model.latent_dim, generator=torch.Generator().manual_seed(7))
    psi = cfg.eval.truncation
    images = torch.cat([generate(generator, z, None, psi) for z in latents.split(250)])
    logits = torch.cat([classifier(x)[1] for x in images.clamp(-1, 1).split(250)])
    predicted = logits.argmax(dim=1)
    num_classes = logits.shape[1]
    return class_coverage(predicted, num_classes), class_histogram(predicted, num_classes).tolist()


def final_fid(run_dir: Path) -> float:
    """The last evaluation's FID; NaN for a run stopped before its last step."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return next((row["eval/fid"] for row in reversed(rows) if "eval/fid" in row), float("nan"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        metavar=("NAME", "KEY=VALUE"),
        help="a name and the overrides it adds to --config (repeat for several); default: one "
        "variant, the config as it is",
    )
    parser.add_argument("--num", type=int, default=2000, help="generated samples classified")
    parser.add_argument("--glyphs", type=int, default=6000)
    parser.add_argument("--work", type=Path, default=None, help="reuse shards/classifier here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from gandist.training.config import load_config
    from gandist.training.trainer import Trainer

    work = args.work or Path(tempfile.mkdtemp(prefix="gandist-coverage-"))
    shards, classifier = prepare(work, args.glyphs)
    variants = args.variant or [["config"]]
    print(f"config={args.config} steps={args.steps} seed={args.seed} classifier={classifier}")
    print("| variant | class_coverage | domain FID | train_s | class shares 0..9 | overrides |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, *extra in variants:
        run_dir = work / f"run-{name}-s{args.steps}-seed{args.seed}"
        overrides = [
            f"output_dir={run_dir}",
            f"data.shards={shards}",
            "data.num_workers=0",
            f"train.steps={args.steps}",
            f"train.seed={args.seed}",
            f"train.checkpoint_every={args.steps}",
            f"train.sample_every={args.steps}",
            "train.progress_bar=false",
            # One evaluation, at the last step, in the classifier's feature space.
            f"eval.every={args.steps}",
            "eval.extractor=gandist-domain",
            f"eval.weights_path={classifier}",
            f"eval.cache_dir={work / 'cache'}",
            "tracking.wandb=false",
            *extra,
        ]
        start = time.perf_counter()
        Trainer(load_config(args.config, overrides)).train()
        seconds = time.perf_counter() - start
        coverage, shares = coverage_of(run_dir, classifier, args.num)
        shares_text = " ".join(f"{s:.2f}" for s in shares)
        print(
            f"| {name} | {coverage:.1f} | {final_fid(run_dir):.1f} | {seconds:.0f} | "
            f"{shares_text} | {' '.join(extra)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
