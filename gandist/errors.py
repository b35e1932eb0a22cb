"""Errors a user can cause: the one leaf module every other gandist module may import."""

from __future__ import annotations


class ConfigError(ValueError):
    """A problem with the user's configuration or data; the CLI prints it and exits with code 2."""


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless `condition` holds (range checks in config sections)."""
    if not condition:
        raise ConfigError(message)


def require_finite(section: object, name: str) -> None:
    """Raise ConfigError for any float field of a config section (or float in a tuple or list
    field) that is inf or nan: no rate, weight, timeout or fraction is meaningful there, and
    `inf > 0` passes every range check."""
    import dataclasses
    import math

    for item in dataclasses.fields(section):  # type: ignore[arg-type]
        value = getattr(section, item.name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ConfigError(f"{name}.{item.name}={value} must be a finite number")
