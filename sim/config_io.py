"""Strict construction of typed dataclass configs from YAML/JSON mappings.

Every config (planner, policy, imitation, loop) is built the same way: an unknown key is an error that
names it and the allowed ones, because a typo that silently fell back to a default would run a whole
experiment with the wrong setting; a value of the wrong type is a ValueError naming the config, not a
TypeError from deep inside ``__post_init__``. Lives in ``sim`` (the lowest layer) so that every package
shares it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["config_from_mapping"]


def config_from_mapping(cls: type[T], data: Any, label: str) -> T:
    """``cls(**data)`` for a dataclass ``cls``; ``label`` names the config in every error message."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{label}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        raise ValueError(f"{label}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    try:
        return cls(**data)
    except TypeError as exc:  # e.g. a string where a number belongs, caught by a comparison in __post_init__
        raise ValueError(f"{label}: {exc}") from None
