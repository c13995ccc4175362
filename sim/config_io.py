"""Strict construction of typed dataclass configs from YAML/JSON mappings.

Every config (planner, policy, imitation, loop) is built the same way: an unknown key is an error that
names it and the allowed ones, because a typo that silently fell back to a default would run a whole
experiment with the wrong setting; a value of the wrong type is a ValueError naming the config, not a
TypeError from deep inside ``__post_init__``. Lives in ``sim`` (the lowest layer) so that every package
shares it.

A config nested in another (``transfer: {gan: ...}`` in a loop config) is built with ``in_section``: its errors
then name the section's path in the file (``transfer.gan: epochs must be ...``), which is what a user can find,
rather than the Python class that checked it (``GanTrainConfig: ...``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

__all__ = ["SectionError", "config_from_mapping", "in_section", "is_int", "is_number"]

# what a config's own checks put before their problems: its class name or "<kind> config"
_CHECKER_LABEL = re.compile(r"^(?:[A-Z][A-Za-z]*|[a-z_ ]+ config): ")


def is_int(x: object) -> bool:
    """An integer, numpy's included; true/false are not (``bool`` is a subclass of ``int``, and YAML's ``yes``
    must not pass for 1)."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def is_number(x: object) -> bool:
    """A real number, numpy's included, not true/false; finiteness is the caller's check."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


class SectionError(ValueError):
    """A problem inside a nested section of a config, named by the section's path (``transfer.gan``)."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem

    def __reduce__(self):  # picklable (process pools) although __init__ takes two arguments
        return SectionError, (self.path, self.problem)


def in_section(path: str, build: Callable[[Any], T], data: Any) -> T:
    """``build(data)`` for the section ``path`` of a config; a ValueError it raises becomes a ``SectionError``
    whose message starts with the section's path (nested sections join with dots) instead of the label of
    the class that checked it."""
    try:
        return build(data)
    except SectionError as exc:
        raise SectionError(f"{path}.{exc.path}", exc.problem) from None
    except ValueError as exc:
        text = str(exc)
        text = text[len(path) + 2:] if text.startswith(f"{path}: ") else _CHECKER_LABEL.sub("", text, count=1)
        raise SectionError(path, text) from None


def config_from_mapping(cls: type[T], data: Any, label: str) -> T:
    """``cls(**data)`` for a dataclass ``cls``; ``label`` names the config in every error message."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{label}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        raise ValueError(f"{label}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    problems = [p for f in fields(cls) if f.name in data and (p := _type_problem(f.name, f.type, data[f.name]))]
    if problems:
        raise ValueError(f"{label}: " + "; ".join(problems))
    try:
        return cls(**data)
    except TypeError as exc:  # e.g. a string where a number belongs, caught by a comparison in __post_init__
        raise ValueError(f"{label}: {exc}") from None


def _type_problem(name: str, annotation: Any, value: Any) -> str | None:
    """What is wrong with the kind of ``value`` for a field annotated ``annotation`` (a string under postponed
    annotations), or None. Only kinds are checked here (a number, a flag, a list of names); ranges and the rest
    are each config's own ``__post_init__``'s business."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    base, optional = text.removesuffix(" | None"), text.endswith(" | None")
    if value is None:
        return None if optional or base not in _KINDS else f"{name} must be {_KINDS[base]}, got null"
    if base in ("int", "float") and (isinstance(value, bool) or not isinstance(value, (int, float))):
        hint = ""
        if isinstance(value, str):
            try:
                float(value)
                hint = " (YAML reads an exponent without a sign as text: write 1.0e+9, not 1.0e9)" if "e" in value.lower() \
                    else " (quoted in the file?)"
            except ValueError:
                pass
        return f"{name} must be {_KINDS[base]}, got {value!r}{hint}"
    if base == "bool" and not isinstance(value, bool):
        return f"{name} must be true or false, got {value!r}"
    if base == "tuple[str, ...]" and not (isinstance(value, str) or (isinstance(value, (list, tuple))
                                                                     and all(isinstance(v, str) for v in value))):
        return f"{name} must be a name or a list of names, got {value!r}"
    return None


_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false"}
