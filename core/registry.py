"""Swappable parts registered by name (lhotse's @register_extractor habit): models, speech
detectors. UI drop-downs list `names()`; an unknown name is refused listing the valid ones."""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> factory. kind names what is registered in messages ("model", "detector")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering a factory under name; a name registered twice is refused."""
        def decorate(factory: T) -> T:
            if name in self._factories:
                raise ValueError(f"{self.kind} name {name!r} is already registered")
            self._factories[name] = factory
            return factory
        return decorate

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def get(self, name: str, *, parameter: str) -> T:
        """The factory registered as name; ValueError naming parameter and the valid names."""
        if name not in self._factories:
            raise ValueError(f"{parameter}: {name!r} is not a registered {self.kind}; available: {', '.join(self.names())}")
        return self._factories[name]
