"""Name -> builder tables for models and objectives, with helpful errors for unknown names."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from gandist.errors import ConfigError

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """A table of named builders: each name lists the module whose `@REGISTRY.register("name")`
    fills it. Names are known without importing anything, so a config typo is answered in a
    fraction of a second; a builder's module (and torch) is imported on its first `get`."""

    def __init__(self, kind: str, entries: dict[str, str]) -> None:
        self.kind = kind
        self._modules = entries
        self._table: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        assert name in self._modules, f"{self.kind} {name!r} is not listed in gandist.registry"

        def add(builder: T) -> T:
            assert name not in self._table, f"{self.kind} {name!r} registered twice"
            self._table[name] = builder
            return builder

        return add

    def names(self) -> list[str]:
        return sorted(self._modules)

    def check(self, name: str, key: str) -> None:
        """Raise ConfigError naming `key` and the accepted names when `name` is unknown."""
        if name not in self._modules:
            raise ConfigError(
                f"unknown {self.kind} {name!r} for {key}; choose from [{', '.join(self.names())}]"
            )

    def get(self, name: str) -> T:
        self.check(name, self.kind)
        if name not in self._table:
            importlib.import_module(self._modules[name])  # runs its @register decorators
        return self._table[name]


def _family(module: str, *names: str) -> dict[str, str]:
    return {name: f"gandist.models.{module}" for name in names}


MODELS: Registry = Registry(
    "model",
    _family("biggan", "biggan")
    | _family("conditional", "conditional")
    | _family("cyclegan", "cyclegan")
    | _family("dcgan", "dcgan")
    | _family("mlp", "mlp")
    | _family("sngan", "sngan")
    | _family("stylegan2", "stylegan2")
    | _family("wavegan", "wavegan", "conditional-wavegan")
    | _family("wgan", "wgan", "wgan-gp"),
)
LOSSES: Registry = Registry(
    "loss",
    {name: "gandist.losses" for name in ("hinge", "least_squares", "nonsaturating", "wasserstein")},
)
ALGORITHMS: Registry = Registry(
    "algorithm",
    {"adversarial": "gandist.training.adversarial", "cyclegan": "gandist.training.cyclegan"},
)
