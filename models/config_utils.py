"""Strict dataclass <-> dict conversion shared by every component config.

Unknown keys are an error (a typo in a config must not be silently ignored).
"""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def config_from_dict(cls: type[T], data: dict, *, where: str = "config") -> T:
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a dict for {cls.__name__}, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {unknown} for {cls.__name__}; valid keys are {sorted(names)}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if isinstance(f.type, type) and dataclasses.is_dataclass(f.type) and isinstance(value, dict):
            value = config_from_dict(f.type, value, where=f"{where}.{f.name}")
        elif isinstance(value, list) and f.name not in ("action_space",):
            value = tuple(value) if isinstance(getattr(cls, f.name, None), tuple) or _is_tuple_field(f) else value
        kwargs[f.name] = value
    return cls(**kwargs)


def _is_tuple_field(f: dataclasses.Field) -> bool:
    return "tuple" in str(f.type).lower()
