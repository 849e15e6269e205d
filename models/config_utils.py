"""Strict dataclass <-> dict conversion shared by every component config, and the one command
line helper for dataclass configs (`add_dataclass_args`, cleanrl's `Args` convention).

Unknown keys are an error (a typo in a config must not be silently ignored).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import types
import typing
from typing import Any, Sequence, TypeVar

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


# ----------------------------------------------------------------------------- command line
def field_docs(cls) -> dict[str, str]:
    """The docstring under each dataclass field (what cleanrl's tyro shows in --help)."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def _tuple_of(elem: type):
    def parse(text: str) -> tuple:
        return tuple(elem(x) for x in text.split(",") if x.strip())
    return parse


def add_dataclass_args(parser: argparse.ArgumentParser, cls, skip: Sequence[str] = (),
                       choices: dict[str, Sequence] | None = None) -> None:
    """One `--flag-name` per field of a dataclass config; `cls(**vars(parser.parse_args()))` builds it.

    Every script that reads a dataclass from the command line uses this, so flags behave the same
    everywhere: `field_name` -> `--field-name`; booleans take `--flag` / `--no-flag`; `X | None`
    parses as X (default None); `tuple[int, ...]` takes comma-separated values; fields without a
    default are required. Help: the docstring under each field. `skip`: fields not on the command
    line (computed ones); `choices`: allowed values per field."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    choices = choices or {}
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        flag = "--" + f.name.replace("_", "-")
        doc = docs.get(f.name, "").replace("%", "%%") or None
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else f.default if f.default is not dataclasses.MISSING else f.default_factory()
        tp = hints[f.name]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next(t for t in typing.get_args(tp) if t is not type(None))
        if tp is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                                required=required, help=doc)
        elif typing.get_origin(tp) is tuple:
            elem = next((t for t in typing.get_args(tp) if t is not Ellipsis), str)
            parser.add_argument(flag, dest=f.name, type=_tuple_of(elem), default=default, required=required,
                                metavar="A,B,...", help=doc)
        else:
            parser.add_argument(flag, dest=f.name, type=tp if tp in (int, float, str) else str, default=default,
                                required=required, choices=choices.get(f.name), help=doc)
