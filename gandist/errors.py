"""Errors a user can cause: the one leaf module every other gandist module may import."""

from __future__ import annotations


class ConfigError(ValueError):
    """A problem with the user's configuration or data; the CLI prints it and exits with code 2."""


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless `condition` holds (range checks in config sections)."""
    if not condition:
        raise ConfigError(message)
