"""ROS 2 parameters from dataclass configs, without rclpy: each field of a (nested) dataclass becomes a parameter
with a dotted name, a scalar type, a description and an inclusive range, and a set of values becomes the config
again through the dataclass's own validation. ``perception.ros_adapter.NodeAdapter`` declares and checks the
parameters with these; ``flipper_control`` and the tests use them to list a node's parameters offline. The names
are also exported by ``perception.ros_adapter`` (its documented API).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

__all__ = ["ConfigError", "ParamInfo", "ParamSpec", "config_from_values", "param_specs"]


class ConfigError(ValueError):
    """A parameter value the node refuses; the message names the node, the parameter, the value and the range."""


@dataclass(frozen=True)
class ParamInfo:
    """Description and inclusive numeric range of one parameter (``None``: unbounded on that side)."""

    description: str = ""
    min: float | None = None
    max: float | None = None
    read_only: bool = False

    def range_text(self) -> str:
        """The allowed range in words, '' when unbounded."""
        if self.min is None and self.max is None:
            return ""
        lo = "-inf" if self.min is None else _number(self.min)
        hi = "inf" if self.max is None else _number(self.max)
        return f"[{lo}, {hi}]"


@dataclass(frozen=True)
class ParamSpec:
    """One parameter derived from a config field: dotted name, scalar kind, default, info, tuple length."""

    name: str
    kind: type          # bool, int, float or str (of the elements, for sequences)
    default: Any
    info: ParamInfo
    sequence: bool = False
    length: int | None = None   # fixed-length tuple[float, float, float]

    def check(self, value: Any) -> Any:
        """``value`` converted to the field's Python type; ``ConfigError`` (without the node name) otherwise."""
        if self.sequence:
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ConfigError(f"parameter {self.name!r} must be a list of {self.kind.__name__}, got {value!r}")
            items = tuple(self._scalar(v) for v in value)
            if self.length is not None and len(items) != self.length:
                raise ConfigError(f"parameter {self.name!r} must have {self.length} elements, got {len(items)}")
            return items
        return self._scalar(value)

    def _scalar(self, v: Any) -> Any:
        ok = {bool: isinstance(v, bool), int: isinstance(v, int) and not isinstance(v, bool),
              float: isinstance(v, (int, float)) and not isinstance(v, bool), str: isinstance(v, str)}[self.kind]
        if not ok:
            raise ConfigError(f"parameter {self.name!r} must be of type {self.kind.__name__}, got {v!r}")
        v = self.kind(v)
        if self.kind in (int, float):
            lo, hi = self.info.min, self.info.max
            if v != v or (lo is not None and v < lo) or (hi is not None and v > hi):
                raise ConfigError(f"parameter {self.name!r} = {v!r} is out of its range {self.info.range_text()}"
                                  + (f" ({self.info.description})" if self.info.description else ""))
        return v


_SCALARS = (bool, int, float, str)


def param_specs(config_cls: type, param_info: dict[str, ParamInfo] | None = None) -> list[ParamSpec]:
    """The parameters of a dataclass config (nested dataclasses flattened into dotted names)."""
    param_info = param_info or {}
    out: list[ParamSpec] = []

    def walk(cls: type, prefix: str, default_obj: Any) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            name, hint = prefix + f.name, hints[f.name]
            default = getattr(default_obj, f.name)
            if dataclasses.is_dataclass(hint):
                walk(hint, name + ".", default)
                continue
            meta_range = f.metadata.get("range", (None, None))
            info = param_info.get(name) or ParamInfo(f.metadata.get("description", ""), *meta_range,
                                                     read_only=f.metadata.get("read_only", False))
            origin, args = typing.get_origin(hint), typing.get_args(hint)
            if hint in _SCALARS:
                out.append(ParamSpec(name, hint, default, info))
            elif origin in (tuple, list) and args and args[0] in _SCALARS and all(a in (args[0], Ellipsis) for a in args):
                length = len(args) if origin is tuple and Ellipsis not in args else None
                out.append(ParamSpec(name, args[0], tuple(default), info, sequence=True, length=length))
            # other field types (optional values, enums, ...) are not parameters: they keep their default

    walk(config_cls, "", config_cls())
    return out


def config_from_values(config_cls: type, values: dict[str, Any]) -> Any:
    """Build ``config_cls`` from dotted parameter values (missing ones keep their defaults); the dataclass's
    own validation errors become ``ConfigError``."""

    def build(cls: type, prefix: str) -> Any:
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            name = prefix + f.name
            if dataclasses.is_dataclass(hints[f.name]):
                kwargs[f.name] = build(hints[f.name], name + ".")
            elif name in values:
                v = values[name]
                kwargs[f.name] = list(v) if typing.get_origin(hints[f.name]) is list else v
        return cls(**kwargs)

    try:
        return build(config_cls, "")
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None


def _number(x: float | int) -> str:
    """A range bound as users type it: integers exactly (2147483647, not 2.14748e+09), floats short."""
    return str(x) if isinstance(x, int) and not isinstance(x, bool) else f"{x:g}"
