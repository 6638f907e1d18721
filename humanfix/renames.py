"""One name per concept: older option names still read, each with one deprecation line; and the hint for a TOML key
that sits in the wrong table.

A config class lists its renamed TOML keys as ``RENAMED = {"old": "new"}`` (a ClassVar beside its fields); the CLI
keeps an old flag hidden and calls :func:`deprecated` when it is used. ``docs/training.md`` lists them all.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from typing import Any

from humanfix.errors import UserError

log = logging.getLogger("humanfix")


def deprecated(old: str, new: str) -> None:
    """The one line an old name prints: ``--out is deprecated: use --output``."""
    log.warning("%s is deprecated: use %s (the old name will be removed)", old, new)


def apply_renames(cls: type, values: dict[str, Any], where: str = "TOML key") -> dict[str, Any]:
    """``values`` (a TOML table for ``cls``) with renamed keys under their new names; both given is an error."""
    renamed = getattr(cls, "RENAMED", {})
    if not renamed or not any(old in values for old in renamed):
        return values
    out = dict(values)
    for old, new in renamed.items():
        if old not in out:
            continue
        if new in out:
            raise UserError(f"{where}s {old!r} and {new!r} name the same option: keep {new!r}")
        deprecated(f"{where} {old!r}", repr(new))
        out[new] = out.pop(old)
    return out


def misplaced_hint(cls: type, keys: list[str]) -> str:
    """`` (lambda_lpips belongs under [objective])`` when an unknown key is a field of one of ``cls``'s tables."""
    hints = typing.get_type_hints(cls)
    tables = {
        f.name: {g.name for g in dataclasses.fields(hints[f.name])}
        for f in dataclasses.fields(cls)
        if dataclasses.is_dataclass(hints.get(f.name))
    }
    found = [f"{key} belongs under [{table}]" for key in keys for table, names in tables.items() if key in names]
    return f" ({'; '.join(found)})" if found else ""
