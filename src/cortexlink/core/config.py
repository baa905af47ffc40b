"""Shared behaviour of the frozen, validated configuration dataclasses."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from cortexlink.core.errors import ConfigError

__all__ = ["ConfigMixin"]

_C = TypeVar("_C", bound="ConfigMixin")


class ConfigMixin:
    """``replace`` (validated copy) and ``to_dict`` for frozen config dataclasses."""

    if TYPE_CHECKING:   # what @dataclasses.dataclass gives every subclass (typeshed's DataclassInstance)
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def replace(self: _C, **overrides: Any) -> _C:
        """Return a validated copy with some fields changed.

        Raises
        ------
        ConfigError
            For an unknown field name or an invalid value.
        """
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"{type(self).__name__} has no field(s) {unknown}; allowed fields: {sorted(names)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON/YAML friendly)."""
        return dataclasses.asdict(self)
