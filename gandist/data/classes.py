"""Class names of a run, and `--class NAME|INDEX` turned into a label the model was trained on.

Names come from `classes.json` in the run directory (written at training start by
`save_class_names`, so they survive moving or deleting the shards), else from the
`manifest.json` beside the run's shards (`data.shards` of its config), else are unknown and
only indices are accepted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gandist.data.shards import expand_shards, read_manifest

CLASSES_FILE = "classes.json"


def shard_class_names(spec: str) -> list[str]:
    """Class names (label order) from the manifest of the first local shard folder listing them."""
    try:
        urls = expand_shards(spec)
    except ValueError:
        return []  # moved or deleted since training: the names are unknown
    for url in urls:
        manifest = read_manifest(url)
        if manifest and manifest.get("classes"):
            return [str(name) for name in manifest["classes"]]
    return []


def save_class_names(run_dir: str | os.PathLike, shards: str) -> list[str]:
    """Write the shards' class names into the run directory (main process, at run start)."""
    names = shard_class_names(shards)
    if names:
        path = Path(run_dir) / CLASSES_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(names) + "\n")
        tmp.replace(path)
    return names


def run_class_names(checkpoint: str | os.PathLike, shards: str) -> list[str]:
    """Names for a checkpoint folder (runs/NAME/checkpoints/step-N) or a run directory."""
    folder = Path(checkpoint)
    for candidate in (folder, folder.parent.parent, folder.parent):
        path = candidate / CLASSES_FILE
        if path.is_file():
            return [str(name) for name in json.loads(path.read_text())]
    return shard_class_names(shards)


def resolve_class(value: str | None, num_classes: int, names: list[str]) -> int | None:
    """The label for `--class VALUE`: a class name or an index of a class the model saw.

    `num_classes` is the model's (0: unconditional); `names` the shards' classes, [] when
    unknown. A model built with more classes than the shards hold never saw the extra ones.
    Raises ValueError in one line naming what is accepted.
    """
    if value is None:
        return None
    if num_classes < 1:
        raise ValueError(
            f"--class {value} needs a class-conditional model; this one is unconditional"
        )
    seen = min(num_classes, len(names)) if names else num_classes
    accepted = f"[0, {seen - 1}]" + (f" or a name: {', '.join(names[:seen])}" if names else "")
    if value.lstrip("-").isdigit():
        index = int(value)
        if 0 <= index < seen:
            return index
        never = " (the model has it, but its training data held no such class)"
        extra = never if seen <= index < num_classes else ""
        raise ValueError(
            f"--class {value} is not a class this model saw{extra}; choose from {accepted}"
        )
    if value in names[:seen]:
        return names.index(value)
    if not names:
        raise ValueError(
            f"--class {value}: the class names of this run are unknown (no {CLASSES_FILE} in the "
            f"run and no manifest.json beside its shards); choose an index in [0, {seen - 1}]"
        )
    raise ValueError(f"--class {value} is not a class this model saw; choose from {accepted}")
