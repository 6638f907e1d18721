"""Labelled comparison grids: one row per model, one column per image (seed), the prompt on top.

The grid's own ``grid`` PNG text chunk records its layout (row labels, column seeds and every cell's
box), so a reader or a test can cut the cells back out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

PAD = 4  # pixels around the text


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` pixels."""
    if _text_size(draw, text, font)[0] <= width:
        return text
    while text and _text_size(draw, text + "…", font)[0] > width:
        text = text[:-1]
    return text + "…"


def make_grid(
    title: str, labels: Sequence[str], rows: Sequence[Sequence[Image.Image]], seeds: Sequence[int]
) -> tuple[Image.Image, dict]:
    """A white sheet: ``title`` on top, then one row per model (label on the left), cells W×H.

    ``rows[r][c]`` is model ``r``'s image ``c``; all images share one size. Returns the RGB grid and
    its layout ``{"title", "rows": labels, "columns": seeds, "cells": [[[x, y, w, h], ...], ...]}``.
    """
    if not rows or not rows[0]:
        raise ValueError("a grid needs at least one row and one column")
    w, h = rows[0][0].size
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(_text_size(probe, s, font)[0] for s in labels) + 2 * PAD
    line_h = max(_text_size(probe, "Ag" + "".join(labels), font)[1], 8)
    header_h = line_h + 2 * PAD
    ncols = max(len(r) for r in rows)
    sheet = Image.new("RGB", (label_w + ncols * w, header_h + len(rows) * h), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, PAD), _fit(draw, title, font, sheet.width - 2 * PAD), fill="black", font=font)
    cells = []
    for r, (label, images) in enumerate(zip(labels, rows, strict=True)):
        y = header_h + r * h
        draw.text((PAD, y + (h - line_h) // 2), label, fill="black", font=font)
        row_cells = []
        for c, im in enumerate(images):
            if im.size != (w, h):
                raise ValueError(f"grid images must share one size: {im.size} != {(w, h)}")
            sheet.paste(im.convert("RGB"), (label_w + c * w, y))
            row_cells.append([label_w + c * w, y, w, h])
        cells.append(row_cells)
    layout = {"title": title, "rows": list(labels), "columns": list(seeds), "cells": cells}
    return sheet, layout


def save_grid(sheet: Image.Image, layout: dict, path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", layout["title"])
    info.add_text("grid", json.dumps(layout))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG", pnginfo=info)
