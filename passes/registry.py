"""Passes by name. A registry is an object (no module-level mutable state): the default
one holds the built-in passes plus those third parties declare under the entry-point group
``onnxpress.passes`` (each entry point names a Pass subclass)."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from onnxpress.errors import BadInputError
from onnxpress.passes.base import Pass

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "onnxpress.passes"


class PassRegistry:
    def __init__(self, passes: list[type[Pass]] | None = None) -> None:
        self._passes: dict[str, type[Pass]] = {}
        for cls in passes or []:
            self.register(cls)

    def register(self, cls: type[Pass]) -> type[Pass]:
        if not cls.name:
            raise ValueError(f"{cls.__qualname__} has no name")
        if cls.name in self._passes and self._passes[cls.name] is not cls:
            raise ValueError(f"pass name {cls.name!r} is already registered")
        self._passes[cls.name] = cls
        return cls

    def get(self, name: str) -> type[Pass]:
        try:
            return self._passes[name]
        except KeyError:
            known = ", ".join(self.names())
            raise BadInputError(f"unknown pass {name!r}; known passes: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._passes)

    @classmethod
    def default(cls) -> PassRegistry:
        from onnxpress.passes.catalogue import BUILTIN_PASSES

        registry = cls(list(BUILTIN_PASSES))
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            try:
                registry.register(entry.load())
            except Exception as error:  # a broken plug-in must not break the built-ins
                logger.warning("skipping pass plug-in %s: %s", entry.name, error)
        return registry
