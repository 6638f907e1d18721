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
- Every piece of user text (prompts, labels, file names, notes) is HTML-escaped in the markup and
  reaches the page's script only as escaped JSON rendered with ``textContent``. A Content-Security-Policy
  stops the page from loading or sending anything.
- ``#selftest`` in the URL makes the page, once loaded, click a choice and press a key, then write what
  it saw into ``<pre id="selftest-result">`` (the headless-browser test reads it with ``--dump-dom``).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import logging
import os
import random
import re
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


def esc(text: Any) -> str:
    """HTML-escape anything (quotes included, so it is safe inside attributes too)."""
    return html.escape(str(text), quote=True)


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


def _fmt(x: Any, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else esc(x)


def _interval(lo_hi: Sequence[float] | None, digits: int = 2) -> str:
    return "" if not lo_hi else f" <span class=ci>[{lo_hi[0]:.{digits}f}, {lo_hi[1]:.{digits}f}]</span>"


def _faces_cell(faces: dict[str, Any] | None) -> tuple[str, str]:
    if not faces:
        return "–", "–"
    rate = f"{100 * faces['face_rate']:.1f}% <span class=ci>({faces['n_with_face']}/{faces['n_images']})</span>"
    return rate, _fmt(faces.get("face_confidence"), 3)


def metrics_html(metrics: dict[str, Any]) -> str:
    """The metrics table (one row per model, one for the real set) and the notes."""
    if not metrics:
        return "<p>No metrics were computed for this report.</p>"
    rows = []
    for label, m in metrics.get("models", {}).items():
        rate, conf = _faces_cell(m.get("faces"))
        kid = m.get("kid")
        rows.append(
            "<tr>"
            f"<th>{esc(label)}</th><td>{m.get('n_generated', '–')}</td>"
            f"<td>{_fmt(m.get('fid'))}{_interval(m.get('fid_interval'))}</td>"
            f"<td>{'–' if kid is None else f'{kid:.5f}'}</td><td>{rate}</td><td>{conf}</td>"
            f"<td>{_fmt(m.get('face_fid'))}</td><td>{_fmt(m.get('clip_score'))}</td>"
            "</tr>"
        )
    real = metrics.get("real")
    if real:
        rate, conf = _faces_cell(real.get("faces"))
        rows.append(
            f"<tr class=real><th>real: {esc(real.get('source', ''))}</th><td>{metrics.get('n_real', '–')}</td>"
            f"<td>reference</td><td></td><td>{rate}</td><td>{conf}</td><td></td><td></td></tr>"
        )
    extractor = metrics.get("feature_extractor") or {}
    head = (
        "<tr><th>model</th><th>images</th><th>FID <span class=ci>[95% interval]</span></th><th>KID</th>"
        "<th>face rate</th><th>face confidence</th><th>face-crop FID</th><th>CLIP score</th></tr>"
    )
    notes = "".join(f"<li>{esc(n)}</li>" for n in metrics.get("notes", []))
    meta = f"mode {esc(metrics.get('mode', '–'))}" + (
        f", features: {esc(extractor.get('name', ''))} (sha256 {esc(str(extractor.get('sha256', ''))[:12])}…)"
        if extractor
        else ""
    )
    return (
        f"<table class=metrics><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
        f"<p class=meta>{meta}</p>" + (f"<ul class=notes>{notes}</ul>" if notes else "")
    )


def ratings_html(pairs: Sequence[dict[str, Any]]) -> str:
    """The A/B results table (from --ratings)."""
    rows = "".join(
        f"<tr><th>{esc(p['a'])} vs {esc(p['b'])}</th><td>{p['wins_a']} / {p['wins_b']} / {p['ties']}</td>"
        f"<td>{_fmt(p['win_rate_a'], 3)}{_interval(None if p['ci_low'] is None else (p['ci_low'], p['ci_high']), 3)}"
        f"</td><td>{_fmt(p['p_value'], 4)}</td></tr>"
        for p in pairs
    )
    return (
        "<table class=metrics><thead><tr><th>A vs B</th><th>A wins / B wins / ties</th>"
        "<th>A's win rate (ties out) <span class=ci>[95% Wilson]</span></th><th>p (binomial, two-sided)</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def gallery_html(groups: dict[str, list[ImageItem]], srcs: dict[Path, str], ids: dict[Path, int]) -> str:
    """Per prompt, a grid with a row per model and a column per seed; unindexed images per model."""

    def img(it: ImageItem) -> str:
        title = f"{it.label} · " + (f"seed {it.seed} · " if it.seed is not None else "") + it.path.name
        return f'<img id="img-{ids[it.path]}" src="{esc(srcs[it.path])}" alt="{esc(title)}" title="{esc(title)}">'

    prompts: dict[tuple[str, str | None], dict[str, dict[int | None, list[ImageItem]]]] = {}
    loose: dict[str, list[ImageItem]] = {}
    for label, items in groups.items():
        for it in items:
            if it.prompt is None:
                loose.setdefault(label, []).append(it)
            else:
                cell = prompts.setdefault((it.prompt, it.negative_prompt), {}).setdefault(label, {})
                cell.setdefault(it.seed, []).append(it)
    parts = []
    for n, ((prompt, negative), by_label) in enumerate(prompts.items()):
        seeds = sorted({s for cells in by_label.values() for s in cells}, key=lambda s: (s is None, s or 0))
        head = "".join(f"<th>seed {esc(s)}</th>" for s in seeds)
        body = "".join(
            f"<tr><th class=label>{esc(label)}</th>"
            + "".join(f"<td>{''.join(img(it) for it in cells.get(s, []))}</td>" for s in seeds)
            + "</tr>"
            for label, cells in by_label.items()
        )
        neg = f'<p class=neg>negative: <span class="text">{esc(negative)}</span></p>' if negative else ""
        parts.append(
            f'<section class=prompt id="prompt-{n}"><h3><span class=num>#{n}</span> '
            f'<span class="text">{esc(prompt)}</span></h3>{neg}'
            f"<div class=scroll><table class=grid><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody>"
            "</table></div></section>"
        )
    for label, items in loose.items():
        cells = "".join(f"<figure>{img(it)}<figcaption>{esc(it.path.name)}</figcaption></figure>" for it in items)
        parts.append(
            f"<section class=prompt><h3>{esc(label)} <span class=num>{len(items)} images, no index "
            f"(prompts unknown)</span></h3><div class=loose>{cells}</div></section>"
        )
    return "".join(parts)


def write_report(
    path: Path,
    groups: dict[str, list[ImageItem]],
    metrics: dict[str, Any] | None = None,
    ratings: Sequence[dict[str, Any]] | None = None,
    embed: bool = True,
    seed: int = 0,
    inputs: Sequence[str] = (),
) -> Path:
    """Write the report page to ``path``; returns it. ``groups``: images per model label."""
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
    data = {"report_id": report_id, "pairs": pairs}
    created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    n_images = len(ids)
    parts = {
        "CREATED": esc(created),
        "INPUTS": "".join(f"<li><code>{esc(s)}</code></li>" for s in inputs),
        "SUMMARY": esc(f"{n_images} images from {len(groups)} model(s), {len(pairs)} A/B pairs"),
        "METRICS": metrics_html(metrics or {}),
        "RATINGS": f"<h2>A/B results</h2>{ratings_html(ratings)}" if ratings else "",
        "GALLERY": gallery_html(groups, srcs, ids) or "<p>No images.</p>",
        "DATA": script_json(data),
    }
    # one pass over the template: text that came from the user is never scanned for placeholders again
    page = re.sub(r"@@([A-Z]+)@@", lambda m: parts[m.group(1)], _TEMPLATE)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


_TEMPLATE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data: blob: 'self' file:;
      style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>humanfix evaluation</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5em 3em; color: #222; }
  nav { position: sticky; top: 0; background: #fff; padding: .6em 0; border-bottom: 1px solid #ddd; z-index: 2; }
  nav button { font-size: 15px; padding: .3em 1em; }
  nav button.on { font-weight: bold; background: #dde8ff; }
  .hidden { display: none !important; }
  table.metrics { border-collapse: collapse; margin: .5em 0; }
  table.metrics td, table.metrics th { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
  table.metrics th:first-child { text-align: left; }
  tr.real { color: #555; }
  .ci, .meta, .num { color: #666; font-size: 90%; }
  .notes { color: #8a4b00; }
  .text { white-space: pre-wrap; overflow-wrap: anywhere; }
  .scroll { overflow-x: auto; }
  table.grid td, table.grid th { padding: 2px; vertical-align: top; }
  table.grid th.label { text-align: right; max-width: 12em; overflow-wrap: anywhere; }
  table.grid img { width: 256px; height: auto; display: block; }
  .loose { display: flex; flex-wrap: wrap; gap: 6px; }
  .loose figure { margin: 0; width: 200px; } .loose img { width: 200px; }
  .loose figcaption { font-size: 11px; color: #666; overflow-wrap: anywhere; }
  #ab .pair { display: flex; gap: 1em; justify-content: center; }
  #ab .side { flex: 1 1 0; max-width: 48vw; text-align: center; }
  #ab .side img { width: 100%; max-width: 768px; max-height: 66vh; object-fit: contain;
                  border: 3px solid transparent; }
  #ab .side img.picked { border-color: #2a6df4; }
  #ab .buttons { text-align: center; margin: .6em 0; }
  #ab .buttons button { font-size: 16px; padding: .4em 1.2em; margin: 0 .3em; }
  #ab-prompt { text-align: center; font-size: 16px; margin: .6em auto; max-width: 60em; }
  #ab-progress { text-align: center; color: #444; }
  kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 .3em; font-size: 90%; }
</style>
</head>
<body>
<nav>
  <button id="tab-overview" class="on" type="button">Overview</button>
  <button id="tab-ab" type="button">Blind A/B</button>
  <span class="meta">@@SUMMARY@@ · written @@CREATED@@</span>
</nav>
<main id="overview">
  <h1>humanfix evaluation</h1>
  <ul class="meta">@@INPUTS@@</ul>
  <h2>Metrics</h2>
  @@METRICS@@
  @@RATINGS@@
  <h2>Images by prompt</h2>
  @@GALLERY@@
</main>
<main id="ab" class="hidden">
  <h1>Blind A/B</h1>
  <p class="meta">Which image shows the people better (anatomy, hands, faces, and how well it follows the
    prompt)? Models are hidden and sides are random. Keys: <kbd>←</kbd>/<kbd>1</kbd> left,
    <kbd>→</kbd>/<kbd>2</kbd> right, <kbd>↓</kbd>/<kbd>0</kbd>/<kbd>space</kbd> tie,
    <kbd>Backspace</kbd>/<kbd>u</kbd> back, <kbd>d</kbd> download. Choices are kept in this browser until
    you download them.</p>
  <div id="ab-empty" class="hidden"><p>No pairs: blind A/B needs at least two models that drew the same
    prompt and seed (a <code>humanfix generate --compare</code> output, or two generate outputs of the same
    prompts file).</p></div>
  <div id="ab-main">
    <p id="ab-progress"></p>
    <p id="ab-prompt" class="text"></p>
    <div class="buttons">
      <button id="choose-left" type="button">← Left is better</button>
      <button id="choose-tie" type="button">Tie</button>
      <button id="choose-right" type="button">Right is better →</button>
    </div>
    <div class="pair">
      <div class="side"><img id="ab-left" alt="left image"></div>
      <div class="side"><img id="ab-right" alt="right image"></div>
    </div>
    <div class="buttons">
      <button id="ab-back" type="button">Back</button>
      <button id="ab-download" type="button">Download choices (JSON)</button>
      <button id="ab-reset" type="button">Clear my choices</button>
    </div>
  </div>
</main>
<pre id="selftest-result" class="hidden"></pre>
<script id="ab-data" type="application/json">@@DATA@@</script>
<script>
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("ab-data").textContent);
  const pairs = data.pairs;
  const storeKey = "humanfix-ab-" + data.report_id;
  const $ = (id) => document.getElementById(id);
  let choices = {};
  try { choices = JSON.parse(localStorage.getItem(storeKey) || "{}") || {}; } catch (e) { choices = {}; }
  let pos = 0;
  let abOn = false;

  function save() { try { localStorage.setItem(storeKey, JSON.stringify(choices)); } catch (e) { /* private mode */ } }
  function done() { return pairs.filter((p) => choices[p.pair]).length; }
  function firstOpen(from) {
    for (let k = 0; k < pairs.length; k++) {
      const i = (from + k) % pairs.length;
      if (!choices[pairs[i].pair]) return i;
    }
    return -1;
  }
  function srcOf(imgId) { const el = $("img-" + imgId); return el ? el.getAttribute("src") : ""; }

  function render() {
    $("ab-empty").classList.toggle("hidden", pairs.length > 0);
    $("ab-main").classList.toggle("hidden", pairs.length === 0);
    if (!pairs.length) return;
    const n = done();
    if (pos < 0) {
      $("ab-progress").textContent = "All " + pairs.length + " pairs judged (" + n + "/" + pairs.length + ")." +
        " Download your choices.";
      $("ab-prompt").textContent = "";
      $("ab-left").removeAttribute("src"); $("ab-right").removeAttribute("src");
      return;
    }
    const p = pairs[pos];
    const c = choices[p.pair];
    $("ab-progress").textContent = "Pair " + (pos + 1) + " of " + pairs.length + " · judged " + n + "/" + pairs.length +
      (c ? " · this one: " + c.choice : "");
    $("ab-prompt").textContent = p.prompt + (p.negative_prompt ? "   (negative: " + p.negative_prompt + ")" : "");
    $("ab-left").src = srcOf(p.left_img);
    $("ab-right").src = srcOf(p.right_img);
    $("ab-left").classList.toggle("picked", !!c && c.choice === "left");
    $("ab-right").classList.toggle("picked", !!c && c.choice === "right");
  }

  function choose(choice) {
    if (!pairs.length || pos < 0) return;
    const p = pairs[pos];
    choices[p.pair] = { choice: choice, time: new Date().toISOString() };
    save();
    if (document.activeElement && document.activeElement.blur) document.activeElement.blur();  // space = tie only
    const next = firstOpen(pos + 1);
    pos = next;
    render();
  }
  function back() {
    if (!pairs.length) return;
    pos = pos < 0 ? pairs.length - 1 : Math.max(0, pos - 1);
    render();
  }

  function exportChoices() {
    return {
      format: "humanfix-ab-choices", version: 1, report_id: data.report_id,
      created: new Date().toISOString(), n_pairs: pairs.length,
      choices: pairs.filter((p) => choices[p.pair]).map((p) => ({
        pair: p.pair, prompt: p.prompt, negative_prompt: p.negative_prompt, seed: p.seed,
        left: p.left, right: p.right, choice: choices[p.pair].choice, time: choices[p.pair].time,
      })),
    };
  }
  function download() {
    const blob = new Blob([JSON.stringify(exportChoices(), null, 2)], { type: "application/json" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "ab-choices-" + data.report_id + ".json";
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }

  function showTab(ab) {
    abOn = ab;
    $("overview").classList.toggle("hidden", ab);
    $("ab").classList.toggle("hidden", !ab);
    $("tab-overview").classList.toggle("on", !ab);
    $("tab-ab").classList.toggle("on", ab);
    if (ab) { if (pos >= 0 && pairs.length && choices[pairs[pos].pair]) pos = firstOpen(pos); render(); }
  }

  $("tab-overview").addEventListener("click", () => showTab(false));
  $("tab-ab").addEventListener("click", () => showTab(true));
  $("choose-left").addEventListener("click", () => choose("left"));
  $("choose-right").addEventListener("click", () => choose("right"));
  $("choose-tie").addEventListener("click", () => choose("tie"));
  $("ab-back").addEventListener("click", back);
  $("ab-download").addEventListener("click", download);
  $("ab-reset").addEventListener("click", () => {
    if (confirm("Clear all choices made in this browser for this report?")) { choices = {}; save(); pos = 0; render(); }
  });
  document.addEventListener("keydown", (e) => {
    if (!abOn || e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key;
    if (k === "ArrowLeft" || k === "1") choose("left");
    else if (k === "ArrowRight" || k === "2") choose("right");
    else if (k === "ArrowDown" || k === "0" || k === " ") choose("tie");
    else if (k === "Backspace" || k === "u") back();
    else if (k === "d") download();
    else return;
    e.preventDefault();
  });

  pos = pairs.length ? Math.max(0, firstOpen(0)) : 0;
  if (pairs.length && done() === pairs.length) pos = -1;
  if (location.hash === "#ab") showTab(true);

  function selftest() {
    choices = {}; save(); pos = 0;
    const imgs = Array.from(document.querySelectorAll("#overview img"));
    const result = {
      images: imgs.length,
      loaded: imgs.filter((i) => i.complete && i.naturalWidth > 0).length,
      pairs: pairs.length,
    };
    showTab(true);
    if (pairs.length) {
      $("choose-left").click();
      document.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowRight", bubbles: true }));
    }
    setTimeout(() => {
      const ab = [$("ab-left"), $("ab-right")];
      result.ab_loaded = ab.filter((i) => i.complete && i.naturalWidth > 0).length;
      result.progress = $("ab-progress").textContent;
      result.stored = JSON.parse(localStorage.getItem(storeKey) || "{}");
      result.export = exportChoices();
      const out = $("selftest-result");
      out.textContent = JSON.stringify(result);
      out.classList.remove("hidden");
    }, 200);
  }
  if (location.hash === "#selftest") {
    if (document.readyState === "complete") selftest(); else window.addEventListener("load", selftest);
  }
})();
</script>
</body>
</html>
"""
