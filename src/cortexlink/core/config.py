"""Shared behaviour of the frozen, validated configuration dataclasses."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from cortexlink.core.errors import ConfigError

__all__ = ["ConfigMixin"]

_C = TypeVar("_C", bound="ConfigMixin")


class ConfigMixin:
    """``replace`` (validated copy) and ``to_dict`` for frozen config dataclasses."""

    def replace(self: _C, **overrides: Any) -> _C:
        """Return a validated copy with some fields changed.

        Raises
        ------
        ConfigError
            For an unknown field name or an invalid value.
        """
        names = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"{type(self).__name__} has no field(s) {unknown}; allowed fields: {sorted(names)}")
        return dataclasses.replace(self, **overrides)  # type: ignore[type-var]

    def to_dict(self) -> dict:
        """Plain-dict form (JSON/YAML friendly)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]
