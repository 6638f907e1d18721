"""The inspection report: one self-contained HTML page with the metrics, the images and a blind A/B mode.

- Overview: the metrics with their intervals and notes, then per prompt a comparison grid (one row per
  model, one column per seed); folders without an index get one plain gallery per model.
- Blind A/B: pairs of images of the same prompt and seed from two models, left/right and order drawn
  at random (seeded) when the page is written. Keys: ←/1 left is better, →/2 right, ↓/0/space tie,
  Backspace/u back, d download. Progress is shown and kept in the browser's localStorage; the choices
  download as a JSON file that ``humanfix evaluate --ratings FILE`` reads (ratings.py has its format).
  The page hides the overview while in A/B mode; the model names are in the page source, so the
  blinding is against casual bias, not against a rater who reads the HTML.
- Images are embedded as data URIs (``embed=True``: the page is one file) or linked by relative path.
- With ``--pose``, a "skeletons" toggle draws each image's persons (keypoints and bones, green when
  plausible, red when not, grey when not scored) as an SVG laid over the image in the browser; the
  image itself is untouched.
- The markup is the Jinja2 template ``templates/report.html.j2`` with autoescaping on, so every piece
  of user text (prompts, labels, file names, notes) is HTML-escaped by construction; it reaches the
  page's script only as escaped JSON (:func:`script_json`) rendered with ``textContent``. A
  Content-Security-Policy stops the page from loading or sending anything.
- ``#selftest`` in the URL makes the page, once loaded, click a choice and press a key, then write what
  it saw into ``<pre id="selftest-result">`` (the headless-browser test reads it with ``--dump-dom``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from humanfix.evaluate.sets import ImageItem

log = logging.getLogger(__name__)

BROWSER_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
                 ".bmp": "image/bmp", ".gif": "image/gif"}  # fmt: skip
BIG_PAGE = 200 * 2**20  # warn above this many bytes of embedded images


def script_json(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` survive raw."""
    return (
        json.dumps(data, ensure_ascii=False)
        .replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def image_src(path: Path, out_dir: Path, embed: bool) -> str:
    """A data URI of the file (re-encoded as PNG when browsers can't show its format) or a relative URL."""
    if not embed:
        return quote(Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix())
    mime = BROWSER_TYPES.get(path.suffix.lower())
    if mime:
        data = path.read_bytes()
    else:
        from PIL import Image

        buf = io.BytesIO()
        with Image.open(path) as im:
            im.convert("RGB").save(buf, format="PNG")
        data, mime = buf.getvalue(), "image/png"
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


# -- A/B pairs --------------------------------------------------------------------------------------------


def ab_pairs(groups: dict[str, list[ImageItem]], ids: dict[Path, int], seed: int = 0) -> list[dict[str, Any]]:
    """Every pair of models' images with the same prompt, negative prompt and seed; sides and order random."""
    rng = random.Random(seed)
    keyed = {
        label: {(it.prompt, it.negative_prompt, it.seed): it for it in items if it.prompt is not None}
        for label, items in groups.items()
    }
    labels = sorted(keyed)
    pairs = []
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            for key in sorted(set(keyed[a]) & set(keyed[b]), key=lambda k: (k[0], k[1] or "", k[2] or 0)):
                left, right = (a, b) if rng.random() < 0.5 else (b, a)
                pairs.append(
                    {
                        "prompt": key[0],
                        "negative_prompt": key[1],
                        "seed": key[2],
                        "left": left,
                        "right": right,
                        "left_img": ids[keyed[left][key].path],
                        "right_img": ids[keyed[right][key].path],
                    }
                )
    rng.shuffle(pairs)
    for n, p in enumerate(pairs):
        p["pair"] = n
    return pairs


# -- the page ------------------------------------------------------------------------------------------------


def _num(x: Any, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _ci(lo_hi: Sequence[float] | None, digits: int = 2, scale: float = 1.0) -> str | None:
    return None if not lo_hi else f"[{scale * lo_hi[0]:.{digits}f}, {scale * lo_hi[1]:.{digits}f}]"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


Cell = tuple[str, "str | None"]  # (value, interval or counts in small print)


def _face_cells(faces: dict[str, Any] | None) -> list[Cell]:
    if not faces:
        return [("–", None), ("–", None)]
    rate = (_pct(faces["face_rate"]), f"({faces['n_with_face']}/{faces['n_images']})")
    return [rate, (_num(faces.get("face_confidence"), 3), None)]


def _pose_cells(pose: dict[str, Any] | None) -> list[Cell]:
    if not pose:
        return [("–", None)] * 4
    return [
        (_pct(pose.get("person_rate")), f"({pose['n_with_person']}/{pose['n_images']})"),
        (_num(pose.get("keypoint_confidence"), 3), _ci(pose.get("keypoint_confidence_interval"), 3)),
        (_pct(pose.get("plausible_rate")), " ".join(filter(None, [
            _ci(pose.get("plausible_rate_interval"), 1, 100), f"({pose['n_plausible']}/{pose['n_scored']})"]))),
        (_num(pose.get("plausibility"), 3), _ci(pose.get("plausibility_interval"), 3)),
    ]  # fmt: skip


def metrics_table(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The metrics table as plain text cells: one row per model, one for the real set; the notes."""
    if not metrics:
        return None
    with_pose = "pose_setup" in metrics
    head: list[Cell] = [
        ("model", None), ("images", None), ("FID", "[95% interval]"), ("KID", None), ("face rate", None),
        ("face confidence", None), ("face-crop FID", None), ("CLIP score", None),
    ]  # fmt: skip
    if with_pose:
        head += [("person rate", None), ("keypoint confidence", "[95%]"), ("plausible poses", "[95%]"),
                 ("plausibility", "[95%]")]  # fmt: skip
    rows = []
    for label, m in metrics.get("models", {}).items():
        kid = m.get("kid")
        cells: list[Cell] = [
            (_num(m.get("n_generated", "–")), None),
            (_num(m.get("fid")), _ci(m.get("fid_interval"))),
            ("–" if kid is None else f"{kid:.5f}", None),
            *_face_cells(m.get("faces")),
            (_num(m.get("face_fid")), None),
            (_num(m.get("clip_score")), None),
        ]
        rows.append({"label": label, "real": False, "cells": cells + (_pose_cells(m.get("pose")) if with_pose else [])})
    real = metrics.get("real")
    if real:
        cells = [
            (_num(metrics.get("n_real", "–")), None), ("reference", None), ("", None),
            *_face_cells(real.get("faces")), ("", None), ("", None),
        ]  # fmt: skip
        if with_pose:
            cells += _pose_cells(real.get("pose"))
        source = f"real: {real.get('source', '')}"
        if (real.get("pose") or {}).get("source"):
            source += f" (poses: {real['pose']['source']})"
        rows.append({"label": source, "real": True, "cells": cells})
    extractor = metrics.get("feature_extractor") or {}
    meta = f"mode {metrics.get('mode', '–')}"
    if extractor:
        meta += f", features: {extractor.get('name', '')} (sha256 {str(extractor.get('sha256', ''))[:12]}…)"
    if with_pose:
        p = metrics["pose_setup"]
        meta += (
            f"; poses: {p['detector']} + {p['estimator']} ({p['weights']} weights), person from "
            f"{p['person_threshold']}, keypoint from {p['keypoint_threshold']}, plausible from {p['plausible_from']}"
        )
    return {"head": head, "rows": rows, "meta": meta, "notes": metrics.get("notes", [])}


def gallery(groups: dict[str, list[ImageItem]], srcs: dict[Path, str], ids: dict[Path, int]) -> dict[str, list]:
    """Per prompt, a grid with a row per model and a column per seed (``prompts``); unindexed images per model."""

    def img(it: ImageItem) -> dict[str, Any]:
        title = f"{it.label} · " + (f"seed {it.seed} · " if it.seed is not None else "") + it.path.name
        return {"id": ids[it.path], "src": srcs[it.path], "title": title, "name": it.path.name}

    by_prompt: dict[tuple[str, str | None], dict[str, dict[int | None, list[ImageItem]]]] = {}
    loose: dict[str, list[ImageItem]] = {}
    for label, items in groups.items():
        for it in items:
            if it.prompt is None:
                loose.setdefault(label, []).append(it)
            else:
                cell = by_prompt.setdefault((it.prompt, it.negative_prompt), {}).setdefault(label, {})
                cell.setdefault(it.seed, []).append(it)
    prompts = []
    for (prompt, negative), by_label in by_prompt.items():
        seeds = sorted({s for cells in by_label.values() for s in cells}, key=lambda s: (s is None, s or 0))
        rows = [
            {"label": label, "cells": [[img(it) for it in cells.get(s, [])] for s in seeds]}
            for label, cells in by_label.items()
        ]
        prompts.append({"prompt": prompt, "negative": negative, "seeds": seeds, "rows": rows})
    return {
        "prompts": prompts,
        "loose": [{"label": label, "images": [img(it) for it in items]} for label, items in loose.items()],
    }


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined
    from markupsafe import Markup

    env = Environment(
        loader=PackageLoader("humanfix.evaluate", "templates"),
        autoescape=True,  # every {{ value }} is HTML-escaped, whatever the template's name
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["script_json"] = lambda data: Markup(script_json(data))  # safe: no <, > or & survives
    env.filters["num"] = _num
    return env


def write_report(
    path: Path,
    groups: dict[str, list[ImageItem]],
    metrics: dict[str, Any] | None = None,
    ratings: Sequence[dict[str, Any]] | None = None,
    embed: bool = True,
    seed: int = 0,
    inputs: Sequence[str] = (),
    skeletons: dict[Path, dict[str, Any]] | None = None,
    keypoint_threshold: float = 0.0,
) -> Path:
    """Write the report page to ``path``; returns it. ``groups``: images per model label.

    ``skeletons``: per image, ``{"w", "h", "persons": [{"keypoints": 17×[x, y, c], "plausibility", "failed"}]}``
    (as in pose.jsonl); keypoints with ``c`` below ``keypoint_threshold`` (or 0) are not drawn.
    """
    from humanfix.evaluate.pose import PLAUSIBLE, SKELETON

    out_dir = path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    ids: dict[Path, int] = {}
    srcs: dict[Path, str] = {}
    size = 0
    for items in groups.values():
        for it in items:
            if it.path not in ids:
                ids[it.path] = len(ids)
                srcs[it.path] = image_src(it.path, out_dir, embed)
                size += len(srcs[it.path])
    if embed and size > BIG_PAGE:
        log.warning("the report embeds %.0f MB of images; --report-images link keeps it small", size / 2**20)
    pairs = ab_pairs(groups, ids, seed)
    report_id = hashlib.sha256(script_json(pairs).encode()).hexdigest()[:16]
    pose = None
    if skeletons:
        pose = {
            "images": {ids[p]: s for p, s in skeletons.items() if p in ids},
            "skeleton": SKELETON,
            "plausible_from": PLAUSIBLE,
            "min_confidence": keypoint_threshold,
        }
    metrics = metrics or {}
    page = (
        _environment()
        .get_template("report.html.j2")
        .render(
            created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            inputs=list(inputs),
            summary=f"{len(ids)} images from {len(groups)} model(s), {len(pairs)} A/B pairs",
            table=metrics_table(metrics),
            pose_notice=(metrics.get("pose_setup") or {}).get("label"),
            ratings=list(ratings or []),
            **gallery(groups, srcs, ids),
            data={"report_id": report_id, "pairs": pairs},
            pose=pose,
        )
    )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
