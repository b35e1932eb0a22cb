"""The house's shape: every import inside gandist points down the layers of DESIGN.md."""

from __future__ import annotations

import ast
from pathlib import Path

GANDIST = Path(__file__).resolve().parents[1] / "gandist"

# Bottom to top. A module may import its own layer or lower ones, never a higher one; deferred
# imports inside functions count too (they hide a cycle, they do not remove it).
LAYERS = [
    {"__init__", "__version__", "errors"},
    {"config"},
    {"registry"},
    {"distributed"},
    {"rundir"},
    {"losses", "augment", "ada", "ema", "schedules", "diagnostics", "models"},
    {"data"},
    {"metrics"},
    {"checkpoint", "tracking", "preemption"},
    {"training"},
    {"runs", "train"},
    {"cli", "bench"},
]


def layer_of(module: str) -> int:
    """The layer of `gandist.x.y` (or `gandist` itself, whose only content is __version__)."""
    top = module.split(".")[1] if "." in module else "__init__"
    (index,) = [i for i, names in enumerate(LAYERS) if top in names]
    return index


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gandist"):
            if node.module == "gandist":  # `from gandist import checkpoint, rundir`
                found |= {f"gandist.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("gandist")}
    return found


def test_every_import_points_down_the_layers() -> None:
    upward = []
    for path in sorted(GANDIST.rglob("*.py")):
        module = ".".join(("gandist", *path.relative_to(GANDIST).with_suffix("").parts))
        module = module.removesuffix(".__init__")
        for target in imports_of(path):
            if layer_of(target) > layer_of(module):
                upward.append(f"{module} imports {target}")
    assert upward == []


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    # The check above must be able to fail: a lower module importing the training core.
    fake = tmp_path / "losses.py"
    fake.write_text("def f():\n    from gandist.training.trainer import Trainer\n")
    assert {layer_of(t) for t in imports_of(fake)} == {layer_of("gandist.training.trainer")}
    assert layer_of("gandist.training.trainer") > layer_of("gandist.losses")


def test_every_registered_name_is_listed_and_listed_names_load() -> None:
    # The registry answers name checks from its lists without importing torch: each listed
    # name must really be registered by the module it names.
    from gandist.registry import ALGORITHMS, LOSSES, MODELS

    for registry in (MODELS, LOSSES, ALGORITHMS):
        for name in registry.names():
            assert callable(registry.get(name)) or registry.get(name) is not None, name
