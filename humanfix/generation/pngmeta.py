"""PNG files that carry how they were made, written atomically so a killed run leaves no half file.

Text chunks (lower-case keys): ``prompt``, ``negative_prompt``, ``seed``, ``model``, ``branch``, ``lora``, ``label``
and ``parameters`` (the whole index record as JSON, plus ``dtype`` and ``software``). Nothing in them
depends on the time or the machine, so the same pixels always give the same file bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

import humanfix

SOFTWARE = f"humanfix {humanfix.__version__}" if hasattr(humanfix, "__version__") else "humanfix"


def save_png(image: Image.Image, path: Path, record: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Write ``image`` to ``path`` (via a temporary file and a rename) with ``record`` in text chunks."""
    info = PngImagePlugin.PngInfo()
    for key in ("prompt", "negative_prompt", "seed", "model", "branch", "lora", "label"):
        value = record.get(key)
        info.add_text(key, "" if value is None else str(value))  # iTXt (UTF-8) when not latin-1
    params = {k: v for k, v in record.items() if k != "file"} | (extra or {}) | {"software": SOFTWARE}
    info.add_text("parameters", json.dumps(params, sort_keys=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, format="PNG", pnginfo=info)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_parameters(path: Path) -> dict[str, Any] | None:
    """The ``parameters`` chunk of a PNG written by :func:`save_png`; None if absent or unreadable."""
    try:
        with Image.open(path) as im:
            text = im.info.get("parameters")
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None
