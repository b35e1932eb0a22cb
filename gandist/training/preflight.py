"""What the shards hold, read before any process starts: mistakes become one-line ConfigErrors.

Each local shard folder is described by its `manifest.json` (`gandist data make/synth` write
it); a folder without one is described by the first samples of its first shard. Remote shards
(`pipe:`, URLs) are not opened here: they are checked when read.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gandist.data.shards import expand_shards, is_remote, read_manifest
from gandist.data.tar import tar_members
from gandist.errors import ConfigError
from gandist.training.config import KIND_NOUNS, Config, a_family, config_warnings, family_kind

PEEK_SAMPLES = 64
"""Samples read from the first shard of a folder without a manifest."""
IMAGE_SUFFIXES = ("png", "jpg", "jpeg", "webp", "bmp", "ppm", "pgm")
AUDIO_SUFFIXES = ("flac", "wav", "ogg", "mp3")


@dataclass
class DataFacts:
    """What the shards say about themselves; None where nothing says."""

    where: str
    """The folder (or shard) the facts were read from, for messages."""
    kind: str | None = None
    labelled: bool | None = None
    num_labels: int = 0
    """1 + the largest label present: the length of the manifest's class list (exact), or
    from the first samples (a lower bound)."""
    labels_exact: bool = False
    classes: list[str] = field(default_factory=list)
    """Class names in label order (the manifest's), or [] when unknown."""
    resolution: int | None = None
    channels: int | None = None
    sample_rate: int | None = None
    length: int | None = None


def conditional_family(model_name: str) -> bool:
    """Whether a model family takes class labels (its builder says `conditional = True`)."""
    from gandist.registry import MODELS

    return bool(getattr(MODELS.get(model_name), "conditional", False))


def data_facts(spec: str) -> list[DataFacts]:
    """Facts of each local shard folder in `data.shards` (one per folder, in spec order)."""
    try:
        urls = expand_shards(spec)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    folders: dict[str, str] = {}  # folder -> its first shard
    for url in urls:
        if not is_remote(url):
            folders.setdefault(str(Path(url).parent), url)
    facts = []
    for folder, first in folders.items():
        manifest = read_manifest(first)
        facts.append(
            _from_manifest(folder, manifest) if manifest else _from_samples(folder, Path(first))
        )
    return facts


def _from_manifest(folder: str, manifest: dict[str, Any]) -> DataFacts:
    facts = DataFacts(
        where=f"{folder}/manifest.json",
        kind=manifest.get("kind"),
        resolution=manifest.get("resolution"),
        channels=manifest.get("channels"),
        sample_rate=manifest.get("sample_rate"),
        length=manifest.get("length"),
    )
    if "classes" in manifest:  # written by data make (empty: no class folders) and data synth
        facts.classes = [str(c) for c in manifest["classes"]]
        facts.labelled = bool(facts.classes)
        facts.num_labels = len(facts.classes)
        facts.labels_exact = True
    else:  # a hand-written manifest: the samples say whether they are labelled
        peeked = _from_samples(folder, next(iter(sorted(Path(folder).glob("*.tar"))), None))
        facts.labelled, facts.num_labels = peeked.labelled, peeked.num_labels
    return facts


def _from_samples(folder: str, shard: Path | None) -> DataFacts:
    facts = DataFacts(where=str(shard or folder))
    if shard is None:
        return facts
    labels, suffixes = [], set()
    for sample in _first_samples(shard, PEEK_SAMPLES):
        suffixes |= set(sample)
        # A bad label is the stream's (and `data verify`'s) to report, not preflight's.
        if "cls" in sample and sample["cls"].strip().isdigit():
            labels.append(int(sample["cls"]))
    if not suffixes:
        return facts
    facts.labelled = bool(labels)
    facts.num_labels = max(labels, default=-1) + 1
    if suffixes & set(IMAGE_SUFFIXES):
        facts.kind = "image"
        image_key = next(s for s in IMAGE_SUFFIXES if s in suffixes)
        facts.resolution, facts.channels = _image_shape(shard, image_key)
    elif suffixes & set(AUDIO_SUFFIXES):
        facts.kind = "audio"
    return facts


def _first_samples(shard: Path, num: int) -> Iterator[dict[str, bytes]]:
    """Up to `num` samples {suffix: bytes} of a local shard, grouped by key as WebDataset does."""
    sample: dict[str, bytes] = {}
    key = None
    count = 0
    try:
        with shard.open("rb") as stream:
            for name, data in tar_members(stream):
                base = name.rsplit("/", 1)[-1]
                if base.startswith("__") or "." not in base:
                    continue
                this_key, suffix = base.split(".", 1)
                if key is not None and this_key != key:
                    yield sample
                    count += 1
                    if count == num:
                        return
                    sample = {}
                key = this_key
                sample[suffix.lower()] = data
    except (OSError, ValueError):
        pass  # a broken shard is reported by the stream and `data verify`, not here
    if sample:
        yield sample


def _image_shape(shard: Path, suffix: str) -> tuple[int | None, int | None]:
    from PIL import Image

    for sample in _first_samples(shard, 1):
        try:
            with Image.open(io.BytesIO(sample[suffix])) as image:
                width, height = image.size
                channels = 1 if image.mode in ("L", "1", "I", "I;16", "F") else 3
                return (width if width == height else None), channels
        except Exception:  # an undecodable sample is the stream's to report
            return None, None
    return None, None


def resolve_num_classes(cfg: Config, facts: list[DataFacts] | None = None) -> int:
    """model.num_classes, or for a conditional family left at 0, the classes in the shards.

    Sets `cfg.model.num_classes` and returns it. Raises ConfigError when it cannot be taken
    from the shards (unlabelled ones are refused by `check_data_fits`).
    """
    if cfg.model.num_classes or not conditional_family(cfg.model.name):
        return cfg.model.num_classes
    facts = data_facts(cfg.data.shards) if facts is None else facts
    present = max((f.num_labels for f in facts), default=0)
    if present < 1:
        return 0  # check_data_fits names the unlabelled shards
    guessed = [f.where for f in facts if f.labelled and not f.labels_exact]
    if guessed:
        raise ConfigError(
            f"model.num_classes=0 asks for the classes of the shards, but {guessed[0]} has no "
            "manifest.json listing them (the first samples hold labels up to "
            f"{present - 1}): set model.num_classes"
        )
    cfg.model.num_classes = present
    return present


def domain_b_facts(cfg: Config) -> list[DataFacts]:
    """Facts of `data.shards_b` (unpaired translation's domain B), [] when it is not set."""
    if not cfg.data.shards_b:
        return []
    try:
        return data_facts(cfg.data.shards_b)
    except ConfigError as err:  # the shard lister names data.shards; here it is domain B's
        raise ConfigError(str(err).replace("data.shards", "data.shards_b", 1)) from None


def check_data_fits(cfg: Config) -> list[str]:
    """Check the config against what the shards hold; returns notes for the start-up summary.

    Raises ConfigError (one line) for a conditional model on unlabelled shards, model.num_classes
    below the labels present, shards of the other kind, and audio at another sample rate. Fills
    in model.num_classes for a conditional family that leaves it at 0 (`resolve_num_classes`).
    Notes say what will be converted on the fly: image size and channels, clip length.
    """
    facts = data_facts(cfg.data.shards) + domain_b_facts(cfg)
    data, model = cfg.data, cfg.model
    conditional = conditional_family(model.name)
    notes = []
    for fact in facts:
        if fact.kind is not None and fact.kind != data.kind:
            # check_names made the family's kind data.kind: naming both says what to change.
            raise ConfigError(
                f"model.name={model.name} generates {KIND_NOUNS[family_kind(model.name)]} "
                f"(data.kind={data.kind}) but {fact.where} holds {fact.kind} samples; point "
                f"data.shards at {data.kind} shards, or train {a_family(fact.kind)} with "
                f"data.kind={fact.kind}"
            )
        if conditional and fact.labelled is False:
            raise ConfigError(
                f"model.name={model.name} is class-conditional but {fact.where} has no labels "
                "(make labelled shards from a folder with one sub-folder per class), "
                "or choose an unconditional model such as dcgan"
            )
        if data.kind == "audio" and fact.sample_rate and fact.sample_rate != data.sample_rate:
            raise ConfigError(
                f"data.sample_rate={data.sample_rate} but {fact.where} holds clips at "
                f"{fact.sample_rate} Hz, which would all be skipped as bad: set "
                f"data.sample_rate={fact.sample_rate}"
            )
    resolve_num_classes(cfg, facts)
    if conditional:
        present = max((f.num_labels for f in facts), default=0)
        if model.num_classes == 0:  # remote shards only: nothing local to take it from
            raise ConfigError(
                f"model.name={model.name} is class-conditional: set model.num_classes "
                f"(data.shards={data.shards} has no local manifest.json to take it from)"
            )
        if 0 < model.num_classes < present:
            where = " and ".join(f.where for f in facts if f.num_labels == present)
            raise ConfigError(
                f"model.num_classes={model.num_classes} but {where} holds labels 0..{present - 1}; "
                f"set model.num_classes={present} (or 0 to take it from the shards)"
            )
        exact = all(f.labels_exact for f in facts)  # the first samples give a lower bound
        if present and exact and model.num_classes > present:
            notes.append(
                f"model.num_classes={model.num_classes} but the shards hold {present} classes: "
                f"classes {present}..{model.num_classes - 1} will never be seen"
            )
    for fact in facts:
        if data.kind == "image" and fact.resolution and fact.resolution != data.resolution:
            notes.append(
                f"images will be resized from {fact.resolution} px to {data.resolution} "
                f"(data.resolution; {fact.where})"
            )
        if data.kind == "image" and fact.channels and fact.channels != data.channels:
            notes.append(
                f"images will be converted from {fact.channels} channels to {data.channels} "
                f"(data.channels; {fact.where})"
            )
        if data.kind == "audio" and fact.length and fact.length != data.length:
            how = "centre-cropped" if fact.length > data.length else "zero-padded"
            notes.append(
                f"clips will be {how} from {fact.length} samples to {data.length} "
                f"(data.length; {fact.where})"
            )
    return notes


NOTES_SHOWN_ENV = "GANDIST_DATA_NOTES_SHOWN"
"""Set by `gandist train` once it printed the notes, so the ranks it launches stay quiet."""


def preflight_data(cfg: Config) -> None:
    """`check_data_fits`, printing its notes (and the config's warnings) once per launch (not
    once per rank) on stderr."""
    notes = check_data_fits(cfg)
    if os.environ.get(NOTES_SHOWN_ENV) or os.environ.get("RANK", "0") != "0":
        return
    for warning in config_warnings(cfg):
        print(f"gandist: warning: {warning}", file=sys.stderr)
    for note in notes:
        print(f"gandist: note: {note}", file=sys.stderr)
