"""Shared machinery for the typed configs.

Each command's config is a dataclass that lives next to the code that reads it (``PrepareConfig``
in ``data/prepare.py``, ``TrainConfig`` in ``train.py`` …), documents each field with a comment and
checks itself in ``__post_init__``. This module holds what they share: where humanfix keeps its
files, building a config from a TOML file plus command-line overrides, and writing it back.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from humanfix.errors import UserError

T = TypeVar("T")


def humanfix_home() -> Path:
    """``$HUMANFIX_HOME``, default ``~/.cache/humanfix``: the tiny model, FID statistics, caches."""
    return Path(os.environ.get("HUMANFIX_HOME", Path.home() / ".cache" / "humanfix")).expanduser()


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"config file {path} is not valid TOML: {e}") from None


class _BadValue(UserError):
    """A config value of the wrong type; ``key`` grows its table prefix on the way out (``objective.lambda_lpips``)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"option {key!r}: {problem}")
        self.key, self.problem = key, problem


def _type_name(annotation: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", Path: "a path"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _coerce(value: Any, annotation: Any, key: str = "?") -> Any:
    """TOML gives lists where configs hold tuples, and strings where they hold paths; the types are checked.

    The checks are those of the dataclass field's type: an integer for ``int`` (not a bool, not 2.5), a number
    for ``float`` (an integer is fine, a bool or "1e-4" is not), true/false for ``bool`` (not "false"), a
    string for ``str``, a table for a nested config; non-finite floats (nan, inf) are refused everywhere.
    A wrong one is a :class:`UserError` naming the key. Python objects of other types pass as they are.
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return value if value is None or len(inner) != 1 else _coerce(value, inner[0], key)
    if isinstance(value, float) and not math.isfinite(value):
        raise _BadValue(key, f"must be a finite number, got {value}")
    if origin is tuple and isinstance(value, (list, tuple)):
        item = args[0] if args and (len(args) == 2 and args[1] is Ellipsis) else None
        return tuple(_coerce(v, item, f"{key}[{i}]") if item else v for i, v in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise _BadValue(key, f"expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or isinstance(value, (float, str, list, dict)):
            raise _BadValue(key, f"expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or isinstance(value, (str, list, dict)):
            raise _BadValue(key, f"expected a number, got {value!r}")
        return float(value) if isinstance(value, int) else value
    if annotation in (str, Path) and isinstance(value, (bool, int, float, list, dict, tuple)):
        raise _BadValue(key, f"expected {_type_name(annotation)}, got {value!r}")
    if origin is tuple and isinstance(value, (str, bool, int, float, dict)):
        raise _BadValue(key, f"expected a list, got {value!r}")
    if annotation is Path and isinstance(value, str):
        return Path(value)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            if dataclasses.is_dataclass(value):
                return value
            raise _BadValue(key, f"expected a table ([{key}]), got {value!r}")
        try:
            return build_config(annotation, **value)
        except _BadValue as e:
            raise _BadValue(f"{key}.{e.key}", e.problem) from None
    return value


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` on top of ``base``, recursing into tables; ``None`` overrides are ignored."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def build_config(cls: type[T], toml_path: str | Path | None = None, **overrides: Any) -> T:
    """``cls`` from a TOML file (optional) with ``overrides`` on top; ``None`` overrides are ignored.

    A field that is itself a dataclass reads a TOML table (``[objective]``) and takes a dict of overrides.
    Unknown keys are a :class:`UserError`, so a typo in a config file never passes silently.
    """
    values = _merge(load_toml(toml_path) if toml_path else {}, overrides)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"unknown {cls.__name__} option(s): {', '.join(unknown)}")
    return cls(**{k: _coerce(v, hints[k], k) for k, v in values.items()})


def to_toml_dict(config: Any) -> dict[str, Any]:
    """A dataclass as TOML-ready values (paths as strings, tuples as lists, ``None`` left out)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if dataclasses.is_dataclass(v):
            return to_toml_dict(v)
        return v

    return {
        f.name: plain(getattr(config, f.name))
        for f in dataclasses.fields(config)
        if getattr(config, f.name) is not None
    }
