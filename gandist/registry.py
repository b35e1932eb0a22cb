"""Name -> builder tables for models and objectives, with helpful errors for unknown names."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from gandist.errors import ConfigError

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """A table of named builders, filled by `@REGISTRY.register("name")` in the listed modules."""

    def __init__(self, kind: str, modules: tuple[str, ...]) -> None:
        self.kind = kind
        self._modules = modules
        self._table: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(builder: T) -> T:
            assert name not in self._table, f"{self.kind} {name!r} registered twice"
            self._table[name] = builder
            return builder

        return add

    def names(self) -> list[str]:
        # Importing the modules runs their @register decorators; done lazily so that
        # importing the registry never pulls in torch model code at config-parse time twice.
        for module in self._modules:
            importlib.import_module(module)
        return sorted(self._table)

    def check(self, name: str, key: str) -> None:
        """Raise ValueError naming `key` and the accepted names when `name` is unknown."""
        names = self.names()
        if name not in names:
            raise ConfigError(
                f"unknown {self.kind} {name!r} for {key}; choose from [{', '.join(names)}]"
            )

    def get(self, name: str) -> T:
        self.check(name, self.kind)
        return self._table[name]


# One module per family; each registers its builder when imported (on the first lookup).
FAMILY_MODULES = tuple(
    f"gandist.models.{name}"
    for name in (
        "biggan",
        "conditional",
        "cyclegan",
        "dcgan",
        "mlp",
        "sngan",
        "stylegan2",
        "wavegan",
        "wgan",
    )
)
MODELS: Registry = Registry("model", FAMILY_MODULES)
LOSSES: Registry = Registry("loss", ("gandist.losses",))
ALGORITHMS: Registry = Registry(
    "algorithm", ("gandist.training.adversarial", "gandist.training.cyclegan")
)
