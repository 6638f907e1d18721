"""Shared machinery for the typed configs.

Each command's config is a dataclass that lives next to the code that reads it (``PrepareConfig``
in ``data/prepare.py``, ``TrainConfig`` in ``train.py`` …), documents each field with a comment and
checks itself in ``__post_init__``. This module holds what they share: where humanfix keeps its
files, building a config from a TOML file plus command-line overrides, and writing it back.
"""

from __future__ import annotations

import dataclasses
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


def _coerce(value: Any, annotation: Any) -> Any:
    """TOML gives lists where configs hold tuples, and strings where they hold paths."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return value if value is None or len(inner) != 1 else _coerce(value, inner[0])
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if annotation is Path and isinstance(value, str):
        return Path(value)
    if dataclasses.is_dataclass(annotation) and isinstance(value, dict):
        return build_config(annotation, **value)
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
    from humanfix.renames import apply_renames, misplaced_hint  # older names, and the [table] hint

    values = _merge(apply_renames(cls, load_toml(toml_path)) if toml_path else {}, apply_renames(cls, overrides))
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"unknown {cls.__name__} option(s): {', '.join(unknown)}{misplaced_hint(cls, unknown)}")
    return cls(**{k: _coerce(v, hints[k]) for k, v in values.items()})


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
