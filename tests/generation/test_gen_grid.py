"""Comparison grids: one row per model, cells where the layout says."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from humanfix.generation.grid import make_grid, save_grid


def test_grid_rows_are_models_and_cells_hold_the_images(tmp_path):
    rng = np.random.default_rng(0)
    rows = [[Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)) for _ in range(3)] for _ in range(2)]
    sheet, layout = make_grid("a prompt that is much too long to fit above such small images", ["base", "ours"],
                              rows, [5, 6, 7])  # fmt: skip
    assert layout["rows"] == ["base", "ours"] and layout["columns"] == [5, 6, 7]
    assert len(layout["cells"]) == 2 and all(len(r) == 3 for r in layout["cells"])
    label_w = layout["cells"][0][0][0]
    header_h = layout["cells"][0][0][1]
    assert sheet.size == (label_w + 3 * 32, header_h + 2 * 24)
    for r in range(2):
        for c in range(3):
            x, y, w, h = layout["cells"][r][c]
            assert (w, h) == (32, 24) and y == header_h + r * 24 and x == label_w + c * 32
            assert np.array_equal(np.asarray(sheet.crop((x, y, x + w, y + h))), np.asarray(rows[r][c]))
    # labels are drawn: the label column is not blank white
    assert np.asarray(sheet.crop((0, header_h, label_w, sheet.height))).min() < 128
    save_grid(sheet, layout, tmp_path / "g.png")
    assert json.loads(Image.open(tmp_path / "g.png").info["grid"]) == layout


def test_grid_rejects_mixed_sizes():
    with pytest.raises(ValueError, match="one size"):
        make_grid("t", ["a", "b"], [[Image.new("RGB", (8, 8))], [Image.new("RGB", (16, 8))]], [0])
