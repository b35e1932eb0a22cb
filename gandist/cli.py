"""The `gandist` command: parses subcommands and hands each to the module that does the work."""

# Every command imports what it needs inside its function: torch, accelerate, wandb and
# torchvision take seconds to import, and `gandist --help` or a config typo should not wait
# for them (`gandist bench startup` measures it).

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_num_processes() -> int:
    """All local GPUs; on a CPU-only machine two gloo ranks (or one on a single core)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return min(2, os.cpu_count() or 1)


def cmd_train(args: argparse.Namespace) -> int:
    from gandist.errors import ConfigError
    from gandist.training.config import load_config

    try:  # before torch is imported: a typo answers at once
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"gandist: error: {err}", file=sys.stderr)
        return 2
    from gandist import train
    from gandist.preemption import run_forwarding_stop
    from gandist.training.preflight import NOTES_SHOWN_ENV

    num = default_num_processes() if args.num_processes == "auto" else int(args.num_processes)
    if num <= 1 or "WORLD_SIZE" in os.environ:
        return train.main([args.config, *args.overrides])
    # Validate here too, so a mistake fails in one process before N start.
    try:
        train.preflight(cfg, world_size=num)
    except ConfigError as err:
        print(f"gandist: error: {err}", file=sys.stderr)
        return 2
    # `--dynamo_backend no`: train.compile decides (a user's `accelerate config` must not compile
    # the local modules the penalties differentiate twice; gandist.training.performance).
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", str(num), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        "-m", "gandist.train", args.config, *args.overrides,
    ]  # fmt: skip
    # TERM/USR1 to this command reach the ranks as a stop file: checkpoint, then exit.
    # The ranks check the data again but leave the notes to this process, which printed them.
    return run_forwarding_stop(command, env=os.environ | {NOTES_SHOWN_ENV: "1"})


def cmd_config(args: argparse.Namespace) -> int:
    from gandist.config import to_yaml
    from gandist.errors import ConfigError
    from gandist.training.config import load_config

    if args.reference:
        from gandist.training.config import config_reference

        print(config_reference(), end="")
        return 0
    if args.config is None:
        print("gandist: error: give a CONFIG file (or --reference)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"gandist: error: {err}", file=sys.stderr)
        return 2
    print(to_yaml(cfg), end="")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from gandist.data.shards import write_manifest, write_shards
    from gandist.data.synthetic import DIGITS, glyph_samples

    if args.num < 1 or args.size < 8:
        print("gandist: error: --num must be >= 1 and --size >= 8", file=sys.stderr)
        return 2
    samples = glyph_samples(args.num, size=args.size, seed=args.seed, workers=args.workers)
    progress = tqdm(samples, total=args.num, desc="glyphs", unit="img", disable=args.quiet)
    shards = write_shards(progress, args.out, prefix="glyphs", max_count=args.shard_size)
    write_manifest(
        args.out, shards, kind="image", dataset="glyphs", count=args.num, seed=args.seed,
        resolution=args.size, channels=3, classes=list(DIGITS),
    )  # fmt: skip
    print(f"wrote {args.num} glyphs in {len(shards)} shards to {args.out}")
    return 0


def cmd_data_glyph_domains(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from gandist.data.shards import write_manifest, write_shards
    from gandist.data.synthetic import DIGITS, GLYPH_DOMAINS, domain_glyph_samples

    num_b = args.num if args.num_b is None else args.num_b
    if min(args.num, num_b) < 1 or args.size < 8:
        print("gandist: error: --num and --num-b must be >= 1 and --size >= 8", file=sys.stderr)
        return 2
    for domain, num in zip(GLYPH_DOMAINS, (args.num, num_b), strict=True):
        out = args.out / domain
        samples = domain_glyph_samples(
            num, domain, size=args.size, seed=args.seed, workers=args.workers
        )
        progress = tqdm(samples, total=num, desc=f"domain {domain}", disable=args.quiet)
        shards = write_shards(progress, out, prefix=f"glyphs-{domain}", max_count=args.shard_size)
        write_manifest(
            out, shards, kind="image", dataset=f"glyph-domains/{domain}", count=num,
            seed=args.seed, resolution=args.size, channels=3, classes=list(DIGITS),
        )  # fmt: skip
        print(f"wrote {num} glyphs of domain {domain} in {len(shards)} shards to {out}")
    return 0


def cmd_data_tones(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from gandist.data.shards import write_manifest, write_shards
    from gandist.data.synthetic import TONE_CLASSES, TONE_RATE_HZ, tone_samples

    if args.num < 1:
        print("gandist: error: --num must be >= 1", file=sys.stderr)
        return 2
    if args.length < 1024:
        print(
            f"gandist: error: --length must be >= 1024 samples, got {args.length}", file=sys.stderr
        )
        return 2
    samples = tone_samples(args.num, seed=args.seed, workers=args.workers, length=args.length)
    progress = tqdm(samples, total=args.num, desc="tones", unit="clip", disable=args.quiet)
    shards = write_shards(progress, args.out, prefix="tones", max_count=args.shard_size)
    write_manifest(
        args.out, shards, kind="audio", dataset="tones", count=args.num, seed=args.seed,
        sample_rate=TONE_RATE_HZ, length=args.length, classes=list(TONE_CLASSES),
    )  # fmt: skip
    print(f"wrote {args.num} tones in {len(shards)} shards to {args.out}")
    return 0


def cmd_data_make(args: argparse.Namespace) -> int:
    from gandist.data.make import MakeOptions, make_shards

    try:
        options = MakeOptions(
            kind=args.kind, size=args.size, fit=args.fit, channels=args.channels,
            image_format=args.format, sample_rate=args.sample_rate, length=args.length,
            windows=args.windows,
        )  # fmt: skip
        if (args.shard_size is not None and args.shard_size < 1) or args.shard_mb <= 0:
            raise ValueError(
                f"--shard-size must be >= 1 (got {args.shard_size}) and --shard-mb > 0 "
                f"(got {args.shard_mb})"
            )
        report = make_shards(
            args.source, args.out, options, prefix=args.prefix, max_count=args.shard_size,
            max_bytes=int(args.shard_mb * 1024 * 1024), workers=args.workers,
            progress=not args.quiet, seed=args.seed,
        )  # fmt: skip
    except ValueError as err:
        print(f"gandist: error: {err}", file=sys.stderr)
        return 2
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    classes = f", {len(report.classes)} classes" if report.classes else ", no labels"
    print(
        f"wrote {report.num_samples} samples from {report.num_files - len(report.skipped)} of "
        f"{report.num_files} files in {len(report.shards)} shards to {args.out}{classes}; "
        f"skipped {len(report.skipped)} files"
    )
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    from gandist.data.verify import verify_shards

    try:
        report = verify_shards(args.shards)
    except ValueError as err:
        print(f"gandist: error: {err}", file=sys.stderr)
        return 2
    for problem in report.problems:
        print(f"BAD {problem}")
    print(
        f"{report.num_shards} shards, {report.num_samples} good samples, "
        f"{len(report.problems)} problems"
    )
    return 1 if report.problems else 0


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from gandist.data.verify import format_report, inspect_shards

    try:
        report = inspect_shards(args.shards, args.out, num=args.num)
    except ValueError as err:
        print(f"gandist: error: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    if report.num_samples:
        print(f"contact sheet: {args.out}")
    return 0


def cmd_bench_data(args: argparse.Namespace) -> int:
    from gandist.bench.data import bench_data, bench_readers, bench_transport

    if args.transport:
        bench_transport()
    if not args.shards:
        if not args.transport:
            print("gandist bench data: give shard specs, or --transport", file=sys.stderr)
            return 2
        return 0
    if args.readers:
        bench_readers(args.shards)
    bench_data(
        args.shards,
        workers=args.workers,
        num_samples=args.samples,
        batch_size=args.batch_size,
        rounds=args.rounds,
    )
    return 0


def sample_class_index(run: str, value: str | None) -> int | None:
    """`--class NAME|INDEX` of `gandist sample` as a label of the run's newest checkpoint."""
    if value is None:
        return None
    from gandist.data.classes import resolve_class, run_class_names
    from gandist.rundir import CONFIG_FILE, is_complete, latest_checkpoint
    from gandist.training.config import load_config
    from gandist.training.preflight import conditional_family

    folder = Path(run)
    if not is_complete(folder):
        folder = latest_checkpoint(folder) or folder
    if not (folder / CONFIG_FILE).is_file():
        raise ValueError(f"{run} is neither a complete checkpoint nor a run with one")
    cfg = load_config(folder / CONFIG_FILE)
    num_classes = cfg.model.num_classes if conditional_family(cfg.model.name) else 0
    return resolve_class(value, num_classes, run_class_names(folder, cfg.data.shards))


def cmd_sample(args: argparse.Namespace) -> int:
    from gandist.runs.sample import real_against_generated, write_samples

    try:
        if args.real:
            out = args.out or Path("real-vs-generated.png")
            print(f"wrote {real_against_generated(args.run, args.real, out, seed=args.seed)}")
            return 0
        class_index = sample_class_index(args.run, args.class_name)
        paths = write_samples(
            args.run,
            num=args.num,
            out=args.out,
            seed=args.seed,
            class_index=class_index,
            truncation=args.truncation,
        )
    except ValueError as err:  # ConfigError is a ValueError
        print(f"gandist: error: {err}", file=sys.stderr)
        return 2
    if len(paths) == 1:
        print(f"wrote {paths[0]}")
    else:
        print(f"wrote {len(paths) - 1} WAV files and {paths[-1].name} to {paths[-1].parent}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from gandist.runs.compare import compare

    try:
        table, path = compare(args.runs, args.out, by=args.by, page=args.html)
    except ValueError as err:
        print(f"gandist: error: {err}", file=sys.stderr)
        return 2
    print(table)
    for written in filter(None, (path, args.html)):
        print(f"wrote {written}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from gandist.runs.export import export_generator

    try:
        out = export_generator(args.run, args.out, raw=args.raw)
    except ValueError as err:
        print(f"gandist: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} (model.safetensors, config.json, README.md, generator.pt2)")
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from gandist.runs.translate import translate

    try:
        count = translate(
            args.run, args.source, args.direction, args.out, batch_size=args.batch_size
        )
    except ValueError as err:  # ConfigError is a ValueError
        print(f"gandist: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {count} translated images ({args.direction}) to {args.out}")
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    from gandist.bench.train import bench_train

    bench_train(args.config, args.overrides, steps=args.steps, rounds=args.rounds, data=args.data)
    return 0


def cmd_bench_logging(args: argparse.Namespace) -> int:
    from gandist.bench.logging_cost import bench_logging

    try:
        bench_logging(
            args.config,
            args.overrides,
            steps=args.steps,
            rounds=args.rounds,
            log_every=args.log_every,
            num_processes=args.num_processes,
            wandb=args.wandb,
        )
    except ValueError as err:
        print(f"gandist: error: {err}", file=sys.stderr)
        return 2
    return 0


def cmd_bench_audio(args: argparse.Namespace) -> int:
    from gandist.bench.audio import bench_audio

    bench_audio(
        args.config, args.overrides, args.steps, args.rounds, args.num_processes, args.plain_threads
    )
    return 0


def cmd_bench_gpu(args: argparse.Namespace) -> int:
    from gandist.bench.gpu import bench_gpu

    try:
        bench_gpu(args.configs, args.set, args.variants, steps=args.steps, out=args.out)
    except ValueError as err:
        print(f"gandist: error: {err}", file=sys.stderr)
        return 2
    return 0


def cmd_bench_families(args: argparse.Namespace) -> int:
    from gandist.bench.families import bench_families

    num = default_num_processes() if args.num_processes == "auto" else int(args.num_processes)
    return bench_families(args.configs, args.set, args.steps, args.warmup, num)


def cmd_bench_quality(args: argparse.Namespace) -> int:
    from gandist.bench.quality import bench_quality
    from gandist.errors import ConfigError

    if args.num_processes != "auto" and not args.num_processes.isdigit():
        print(
            f"gandist: error: --num-processes must be a number or 'auto', got {args.num_processes!r}",
            file=sys.stderr,
        )
        return 2
    num = default_num_processes() if args.num_processes == "auto" else int(args.num_processes)
    try:
        rows = bench_quality(
            args.configs, args.override, budget_s=args.budget_s, num_processes=num,
            work=args.work, samples=args.samples, json_path=args.json,
            skip_baseline=args.skip_baseline, glyphs=args.glyphs, before=args.before,
        )  # fmt: skip
    except ConfigError as err:
        print(f"gandist: error: {err}", file=sys.stderr)
        return 2
    return 1 if any("error" in row for row in rows) else 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from gandist.distributed import CudaUnavailableError
    from gandist.runs.evaluate import evaluate_checkpoint
    from gandist.train import configure_logging

    configure_logging()
    try:
        record, _ = evaluate_checkpoint(args.run, args.overrides, num=args.num, best=args.best)
    except ValueError as err:  # ConfigError is a ValueError
        print(f"gandist: error: {err}", file=sys.stderr)
        return 2
    except CudaUnavailableError as err:
        print(f"gandist: error: {err}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(record, indent=2))
    return 0


def cmd_metrics_train_extractor(args: argparse.Namespace) -> int:
    from gandist.metrics.domain import train_classifier

    try:
        report = train_classifier(
            args.shards, args.out, kind=args.kind, resolution=args.resolution,
            channels=args.channels, sample_rate=args.sample_rate, length=args.length,
            steps=args.steps, batch_size=args.batch_size, width=args.width, lr=args.lr,
            max_samples=args.max_samples, seed=args.seed, progress=not args.quiet,
        )  # fmt: skip
    except ValueError as err:
        print(f"gandist: error: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}: {report['kind']} classifier, {report['num_classes']} classes, "
        "validation accuracy "
        f"{report['val_accuracy']:.3f} on {report['num_val']} held-out samples "
        f"({report['train_s']:.0f} s); use it with eval.extractor=gandist-domain "
        f"eval.weights_path={args.out}"
    )
    return 0


def cmd_bench_startup(args: argparse.Namespace) -> int:
    from gandist.bench.startup import bench_startup

    bench_startup(rounds=args.rounds)
    return 0


def cmd_bench_fid(args: argparse.Namespace) -> int:
    from gandist.bench.fid import bench_fid

    ranks = [int(r) for r in args.ranks.split(",")]
    bench_fid(num=args.num, num_real=args.num_real, ranks=ranks, batch_size=args.batch_size)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gandist", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a GAN from a YAML config and key=value overrides")
    p.add_argument("config", help="YAML file, e.g. configs/dcgan.yaml")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. train.steps=1000")
    p.add_argument(
        "--num-processes", default="1",
        help="ranks to start on this machine through accelerate launch: a number or 'auto' "
        "(all GPUs, or 2 gloo ranks on a CPU machine); default 1",
    )  # fmt: skip
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("config", help="print the resolved config")
    p.add_argument("config", nargs="?")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--reference", action="store_true", help="print every key as a markdown table")
    p.set_defaults(func=cmd_config)

    data = sub.add_parser("data", help="make, inspect and verify WebDataset shards")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    synth = data_sub.add_parser("synth", help="write a built-in synthetic dataset")
    synth_sub = synth.add_subparsers(dest="dataset", required=True)
    p = synth_sub.add_parser("glyphs", help="labelled digit glyphs with varied style and colour")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--num", type=int, default=20000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_data_synth)
    p = synth_sub.add_parser(
        "glyph-domains",
        help="unpaired two-domain glyphs for cyclegan: OUT/a (light on navy), OUT/b (bold red on cream)",
    )
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--num", type=int, default=10000, help="samples of domain A")
    p.add_argument("--num-b", type=int, default=None, help="samples of domain B (default --num)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=500, help="samples per shard")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_data_glyph_domains)
    p = synth_sub.add_parser("tones", help="labelled audio: notes and hits of 8 timbres, 16 kHz")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--num", type=int, default=8000)
    p.add_argument(
        "--length",
        type=int,
        default=16384,
        help="samples per clip (16384: 1.02 s; 4096: 0.26 s, for short CPU runs)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=500, help="samples per shard")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_data_tones)

    p = data_sub.add_parser("make", help="turn a folder of images or audio into shards")
    p.add_argument("--from", dest="source", required=True, type=Path,
                   help="folder; its sub-folders are classes (labels 0.. in name order)")  # fmt: skip
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--kind", required=True, choices=["image", "audio"])
    p.add_argument("--size", type=int, default=64, help="images: output side in pixels")
    p.add_argument("--fit", default="crop", choices=["crop", "pad"],
                   help="images: centre-crop the resized image, or pad it to a square")  # fmt: skip
    p.add_argument("--channels", type=int, default=3, choices=[1, 3], help="images: 1 = grayscale")
    p.add_argument(
        "--format", default="png", choices=["png", "jpg"], help="images: png is lossless"
    )
    p.add_argument("--sample-rate", type=int, default=16000, help="audio: output rate in Hz")
    p.add_argument("--length", type=int, default=16384, help="audio: samples per clip")
    p.add_argument("--windows", action="store_true",
                   help="audio: cut long files into windows of --length instead of one centre crop")  # fmt: skip
    p.add_argument(
        "--shard-size", type=int, default=None,
        help="samples per shard at most; default: from the number of files, about 64 shards of "
        "16 to 1000 samples (300 images: 19 shards), so ranks x workers each read their own",
    )  # fmt: skip
    p.add_argument("--shard-mb", type=float, default=256, help="MiB per shard at most")
    p.add_argument(
        "--seed", type=int, default=0,
        help="files are shuffled across the whole set from this seed before writing, so each "
        "shard mixes all classes; the same folder and seed give the same shards",
    )  # fmt: skip
    p.add_argument("--prefix", default="shard", help="shard file name prefix")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_data_make)

    p = data_sub.add_parser("verify", help="decode every sample; exit 1 if any is bad")
    p.add_argument("shards", help="folder, file, brace pattern, pipe: or URL")
    p.set_defaults(func=cmd_data_verify)

    p = data_sub.add_parser("inspect", help="counts, classes and a contact sheet")
    p.add_argument("shards", help="folder, file, brace pattern, pipe: or URL")
    p.add_argument("--out", type=Path, default=Path("contact-sheet.png"))
    p.add_argument("--num", type=int, default=64, help="samples on the contact sheet")
    p.set_defaults(func=cmd_data_inspect)

    p = sub.add_parser(
        "sample", help="draw a grid of samples (audio: WAV files and spectrograms) from a run"
    )
    p.add_argument("run", help="run directory (newest checkpoint) or a checkpoint folder")
    p.add_argument("--num", type=int, default=64)
    p.add_argument(
        "--out", type=Path, default=None,
        help="image runs: the grid PNG (default samples.png); audio runs: a folder for the WAV "
        "files and spectrograms.png (default samples/)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--class", dest="class_name", default=None, metavar="NAME|INDEX",
        help="conditional models: draw only this class, by name (the shards' class folders) or "
        "index (default: cycle through all classes)",
    )  # fmt: skip
    p.add_argument(
        "--real", type=int, default=0, metavar="N",
        help="audio runs: instead, one PNG (--out, default real-vs-generated.png) of the "
        "spectrograms of the first N real clips above N generated ones",
    )  # fmt: skip
    p.add_argument(
        "--truncation", type=float, default=1.0, metavar="PSI",
        help="truncation trick in [0, 1]: towards the mean w (style-based G) or resampling "
        "out-of-range z (others); 1 = off, 0.7 is usual",
    )  # fmt: skip
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("compare", help="a table and curves of finished runs (no wandb needed)")
    p.add_argument("runs", nargs="+", help="run directories, globs, or a folder of runs (a sweep)")
    p.add_argument("--out", type=Path, default=Path("compare.png"), help="PNG of the curves")
    p.add_argument(
        "--by", choices=["images", "steps", "hours"], default="images",
        help="x-axis of the curves: images seen (default), steps or wall-clock hours",
    )  # fmt: skip
    p.add_argument("--html", type=Path, default=None, help="also write one self-contained page")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export", help="a generator others load: hub folder + torch.export program")
    p.add_argument("run", help="run directory (its newest checkpoint) or a checkpoint folder")
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    p.add_argument(
        "--raw", action="store_true",
        help="the trained generator's weights instead of its EMA",
    )  # fmt: skip
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("translate", help="translate images with a cyclegan run (A->B or B->A)")
    p.add_argument("run", help="run directory (newest checkpoint) or a checkpoint folder")
    p.add_argument("--from", dest="source", required=True,
                   help="a folder of images, or shards (anything data.shards accepts)")  # fmt: skip
    p.add_argument("--direction", required=True, choices=["ab", "ba"],
                   help="ab: domain A (data.shards) to B (data.shards_b); ba: B to A")  # fmt: skip
    p.add_argument("--out", required=True, type=Path, help="folder for the PNG files")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("eval", help="FID / KID / IS of a run's newest checkpoint or one checkpoint")
    p.add_argument("run", help="run directory (its newest checkpoint) or a checkpoint folder")
    p.add_argument("--best", action="store_true", help="the run's checkpoint marked best by FID")
    p.add_argument("overrides", nargs="*", help="eval.*=value, e.g. eval.weights_path=x.pth")
    p.add_argument(
        "--num", "--num-samples", dest="num", type=int, default=None,
        help="generated samples (default eval.num_samples); under torchrun write --num-samples, "
        "since torchrun reads --num as its own --numa-binding",
    )  # fmt: skip
    p.set_defaults(func=cmd_eval)

    metrics = sub.add_parser("metrics", help="feature extractors for FID / KID / IS")
    metrics_sub = metrics.add_subparsers(dest="metrics_command", required=True)
    p = metrics_sub.add_parser(
        "train-extractor",
        help="train a domain classifier on labelled image or audio shards "
        "(eval.extractor=gandist-domain)",
    )
    p.add_argument("shards", help="labelled shards: a folder, a file or a brace pattern")
    p.add_argument("--out", required=True, type=Path, help="classifier file, e.g. extractor.pt")
    p.add_argument("--kind", choices=("image", "audio"), default=None,
                   help="what the shards hold (default: their manifest.json, else the first sample)")  # fmt: skip
    p.add_argument("--resolution", type=int, default=None,
                   help="images: side they are resized to (default: manifest, else 32)")  # fmt: skip
    p.add_argument("--channels", type=int, default=None, choices=(1, 3),
                   help="images: 1 or 3 (default: manifest, else 3)")  # fmt: skip
    p.add_argument("--sample-rate", type=int, default=None,
                   help="audio: rate in Hz of the clips (default: manifest, else 16000)")  # fmt: skip
    p.add_argument("--length", type=int, default=None,
                   help="audio: samples per clip, centre-cropped or padded (default: manifest, else 16384)")  # fmt: skip
    p.add_argument("--steps", type=int, default=200, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=8, help="channels of the first conv layer")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (one-cycle)")
    p.add_argument("--max-samples", type=int, default=None, help="read at most this many samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_metrics_train_extractor)

    bench = sub.add_parser("bench", help="benchmarks that print figures")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    p = bench_sub.add_parser("train", help="Trainer images/s against a plain PyTorch loop")
    p.add_argument("config", nargs="?", default="configs/dcgan.yaml")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--steps", type=int, default=60, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of each")
    p.add_argument("--data", choices=("memory", "stream"), default="memory",
                   help="memory: the same decoded batches for both loops; stream: both read the shards")  # fmt: skip
    p.set_defaults(func=cmd_bench_train)
    p = bench_sub.add_parser(
        "logging", help="time per step logging every train.log_every steps against only at the end"
    )
    p.add_argument("config", nargs="?", default="configs/mlp.yaml")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--steps", type=int, default=200, help="steps per run")
    p.add_argument("--rounds", type=int, default=3, help="alternating pairs of runs")
    p.add_argument("--log-every", type=int, default=None,
                   help="the logging run's interval (default: the config's train.log_every)")  # fmt: skip
    p.add_argument("--num-processes", type=int, default=1,
                   help="ranks (more than 1: `gandist train` subprocesses, 1 thread a rank)")  # fmt: skip
    p.add_argument("--wandb", action="store_true", help="also log to wandb (offline)")
    p.set_defaults(func=cmd_bench_logging)
    p = bench_sub.add_parser(
        "audio", help="seconds of audio generated per second: N ranks against a plain loop"
    )
    p.add_argument("config", nargs="?", default="configs/wavegan.yaml")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--steps", type=int, default=30, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of each")
    p.add_argument("--num-processes", type=int, default=2, help="ranks of the Trainer")
    p.add_argument("--plain-threads", type=int, default=None,
                   help="threads of the plain loop (default: torch's, one per core)")  # fmt: skip
    p.set_defaults(func=cmd_bench_audio)
    p = bench_sub.add_parser(
        "gpu", help="compile, channels_last and bf16 side by side against a plain fp32 loop"
    )
    p.add_argument("configs", nargs="*", default=["configs/dcgan64.yaml"])
    p.add_argument("--set", nargs="*", default=[], help="key=value overrides for every run")
    p.add_argument("--variants", nargs="+", default=None,
                   help="Trainer variants (default all: fp32 fp32+cl fp32+compile bf16 bf16+cl bf16+cl+compile)")  # fmt: skip
    p.add_argument("--steps", type=int, default=60, help="steps per run")
    p.add_argument("--out", default=None, help="also write the table here as JSON")
    p.set_defaults(func=cmd_bench_gpu)
    p = bench_sub.add_parser("data", help="stream samples/s against a plain decode loop")
    p.add_argument("shards", nargs="*", help="one or more shard specs (images or audio)")
    p.add_argument("--workers", type=int, nargs="+", default=None,
                   help="worker counts to time (default 0, 1, 2 and all cores; 0 = in-process)")  # fmt: skip
    p.add_argument("--samples", type=int, default=2048, help="samples per timed run")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5, help="back-to-back pairs; medians count")
    p.add_argument("--transport", action="store_true",
                   help="also time worker-to-trainer batch hand-over: pipe, shared tensor, slots")  # fmt: skip
    p.add_argument("--readers", action="store_true",
                   help="also time the tar readers on the shards: tarfile, WebDataset's, gandist's")  # fmt: skip
    p.set_defaults(func=cmd_bench_data)
    p = bench_sub.add_parser("families", help="images/s of every GAN family at its default config")
    p.add_argument("configs", nargs="*", help="config files (default: every family's config)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per config")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per config first")
    p.add_argument("--num-processes", default="auto", help="ranks: a number or 'auto'")
    p.add_argument("--set", nargs="*", default=[], help="key=value overrides for every config")
    p.set_defaults(func=cmd_bench_families)
    p = bench_sub.add_parser(
        "quality",
        help="domain FID, precision, recall and class coverage of every family after the same "
        "wall-clock budget, against the seeds' textbook MLP loop",
    )
    p.add_argument("--configs", nargs="+", default=None,
                   help="config files (default: every image family's: mlp dcgan conditional wgan wgan-gp sngan biggan stylegan2)")  # fmt: skip
    p.add_argument("--budget-s", type=float, default=600.0,
                   help="training seconds per config and for the seeds' loop, from the end of the first step")  # fmt: skip
    p.add_argument("--num-processes", default="2",
                   help="ranks per training run (one thread each; the seeds' loop gets as many threads): a number or 'auto'")  # fmt: skip
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for every family run (repeat for several)")  # fmt: skip
    p.add_argument("--work", type=Path, default=None,
                   help="folder of the glyphs, classifier, reference cache and runs (reused; default a new temporary one)")  # fmt: skip
    p.add_argument("--samples", type=int, default=2000,
                   help="generated samples scored, and real glyphs in the reference")  # fmt: skip
    p.add_argument("--glyphs", type=int, default=20000, help="built-in glyphs written to --work")
    p.add_argument("--json", type=Path, default=None, help="also write the table here as JSON")
    p.add_argument("--skip-baseline", action="store_true", help="leave out the seeds' loop")
    p.add_argument("--before", metavar="COMMIT", default=None,
                   help="also train each config as it was at this commit of the repository, with that commit's code, for a before/now table")  # fmt: skip
    p.set_defaults(func=cmd_bench_quality)
    p = bench_sub.add_parser(
        "fid", help="scoring time of our sharded path against torch-fidelity direct (InceptionV3)"
    )
    p.add_argument("--num", type=int, default=10000, help="generated samples scored")
    p.add_argument("--num-real", type=int, default=1000, help="real samples in the reference")
    p.add_argument("--ranks", default="1,2", help="rank counts to time our path on, e.g. 1,2")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=cmd_bench_fid)
    p = bench_sub.add_parser(
        "startup", help="seconds to answer of --help, a config typo and others (fresh processes)"
    )
    p.add_argument("--rounds", type=int, default=5, help="runs of each command; medians count")
    p.set_defaults(func=cmd_bench_startup)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may come after options (`train CFG --num-processes 2 a=1`); argparse stops
    # collecting a positional list at the first option, so gather the stragglers here.
    if extra:
        stray = [item for item in extra if item.startswith("-") or "=" not in item]
        if stray or not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
        args.overrides = [*args.overrides, *extra]
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
