"""Schema-agnostic config loading: dataclass defaults < YAML file < key=value overrides.

Knows no gandist section: the root schema (`gandist.training.config.Config`) and its sections
live next to the components they configure. Every mistake becomes a one-line ConfigError that
names the key or file and what would be accepted.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError
from yaml import YAMLError

from gandist.errors import ConfigError, require

T = TypeVar("T")


def merge_layers(
    schema: type, path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()
) -> DictConfig:
    """The schema's defaults merged with a YAML file and `key=value` overrides (not validated yet)."""
    layers = []
    if path is not None:
        path = Path(path)
        require(path.is_file(), f"config file not found: {path}")
        try:
            loaded = OmegaConf.load(path)
        except (YAMLError, OmegaConfBaseException) as err:
            detail = " ".join(str(err).split())
            raise ConfigError(f"cannot parse {path}: {detail}") from None
        except OSError as err:  # OmegaConf's answer to a file holding one scalar
            raise ConfigError(f"cannot read {path}: {err}") from None
        require(
            isinstance(loaded, DictConfig),
            f"{path} holds a list; a config file maps sections to keys (e.g. `train:` and an "
            "indented `steps: 100` below it)",
        )
        layers.append(loaded)
    for item in overrides:
        require("=" in item, f"override {item!r} must look like key=value (e.g. train.steps=100)")
    for item in overrides:
        key = item.split("=", 1)[0]
        require(
            key and all(key.split(".")),
            f"override {item!r} has an empty key; write section.key=value (e.g. train.steps=100)",
        )
    try:
        layers.append(OmegaConf.from_dotlist(list(overrides)))
    except (YAMLError, OmegaConfBaseException) as err:
        detail = " ".join(str(err).split())
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {detail}") from None

    merged = OmegaConf.structured(schema)
    for layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except ConfigKeyError as err:
            raise ConfigError(_unknown_key_message(err, schema)) from None
        except ValidationError as err:
            raise ConfigError(_validation_message(err, layer)) from None
    return merged


def to_object(merged: DictConfig) -> Any:
    """Build the dataclasses (running every `__post_init__` check) from merged layers."""
    try:
        return OmegaConf.to_object(merged)
    except ValidationError as err:
        raise ConfigError(_validation_message(err)) from None
    except OmegaConfBaseException as err:
        raise ConfigError(str(err).splitlines()[0]) from None


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML, as written into the run directory."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain containers (for trackers)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def _section_fields(schema: type, dotted: str) -> list[str]:
    """Field names accepted at a dotted section path (`''` for the top level)."""
    cls: Any = schema
    for part in filter(None, dotted.split(".")):
        cls = {f.name: f for f in dataclasses.fields(cls)}[part].default_factory
    return [f.name for f in dataclasses.fields(cls)]


def _unknown_key_message(err: ConfigKeyError, schema: type) -> str:
    key = str(getattr(err, "key", "") or "")
    parent = str(getattr(err, "full_key", "") or "")
    section = parent.rsplit(".", 1)[0] if "." in parent else ""
    full = f"{section}.{key}" if section else key
    try:
        accepted = _section_fields(schema, section)
    except (KeyError, TypeError):
        return f"unknown config key: {full}"
    hint = difflib.get_close_matches(key, accepted, n=1)
    maybe = f" (did you mean {section + '.' if section else ''}{hint[0]}?)" if hint else ""
    where = f"in {section}" if section else "at the top level"
    return f"unknown config key '{full}'{maybe}; accepted {where}: {', '.join(accepted)}"


def _validation_message(err: ValidationError, layer: Any = None) -> str:
    key = getattr(err, "full_key", "") or _section_given_a_scalar(err, layer) or "?"
    first = str(err).splitlines()[0]
    if "'False'" in first or "'True'" in first:
        first += " (YAML reads yes/no/on/off as booleans: quote the value, or write fp32 for no)"
    return f"bad value for '{key}': {first}"


def _section_given_a_scalar(err: ValidationError, layer: Any) -> str | None:
    """OmegaConf names no key when a whole section is given a scalar (`data=3`): find it."""
    if not isinstance(layer, DictConfig) or "is not a subclass of" not in str(err):
        return None
    section = str(err).split("is not a subclass of ", 1)[1].split(".", 1)[0].lower()
    scalars = [str(k) for k in layer if not isinstance(layer[k], DictConfig)]
    return next((k for k in scalars if section.startswith(k.lower())), None)


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal under each field) read from the class source."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())  # type: ignore[attr-defined]
    return docs


def reference_markdown(root: Any) -> str:
    """The config reference table (markdown) of a root config instance, from its dataclasses."""
    defaults = to_dict(root)
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]

    def walk(cls: type, prefix: str, values: dict[str, Any]) -> None:
        docs = _field_docs(cls)
        for f in dataclasses.fields(cls):
            value = values[f.name]
            if dataclasses.is_dataclass(f.default_factory):
                walk(f.default_factory, f"{prefix}{f.name}.", value)
                continue
            shown = "null" if value is None else value
            lines.append(f"| `{prefix}{f.name}` | `{shown}` | {docs.get(f.name, '')} |")

    walk(type(root), "", defaults)
    return "\n".join(lines) + "\n"
