"""Which images an evaluation reads: generate outputs (with their index.jsonl) and plain image folders.

A ``humanfix generate`` output holds PNGs plus ``index.jsonl``, one JSON record per image with at least
``file`` (path relative to the folder), ``prompt`` and ``seed``, and ``label`` (``base`` or the branch's
name; older records may carry only ``model``). With ``--compare`` it holds one subfolder per model and a
``grids/`` folder: only the files the index names count, so grids never enter a metric.

A ``humanfix prepare-data`` split (``metadata.jsonl`` beside ``images/``, ``masks/``, ``crops/``) counts its
images alone, as its records name them: masks and crops are never samples. A prepare-data output root (the
folder ``train --data`` takes) stands for its one split; with several splits it is refused, naming them.

Any other folder is read like clean-fid reads one: every image file below it, recursively, sorted,
so an FID over it is the FID clean-fid's ``compute_fid`` gives for the same folder (less a ``grids/``
folder inside it, where generate puts its comparison sheets).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from glob import glob
from pathlib import Path
from typing import Any

from humanfix.errors import UserError

INDEX = "index.jsonl"  # the file ``humanfix generate`` writes next to its images
GRIDS = "grids"  # generate's comparison sheets (one PNG per prompt), never part of a metric
# clean-fid's image extensions (cleanfid.utils.EXTENSIONS without its .npy arrays), globbed the same way.
EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp", "JPEG", "JPG", "PNG")


@dataclass(frozen=True)
class ImageItem:
    """One image: its file, the model (label) that drew it, and its prompt/seed when an index names them."""

    path: Path
    label: str
    prompt: str | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    root: Path | None = None  # the --generated folder it came from
    record: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)  # the full index record


@dataclass
class GeneratedSet:
    """One ``--generated`` folder: its images (in index or clean-fid order) and whether an index named them."""

    root: Path
    items: list[ImageItem]
    indexed: bool


def list_images(folder: Path) -> list[Path]:
    """Every image below ``folder``, recursively and sorted, exactly as clean-fid's ``get_folder_features``."""
    files = sorted(f for ext in EXTENSIONS for f in glob(os.path.join(str(folder), f"**/*.{ext}"), recursive=True))
    return [Path(f) for f in files if os.path.isfile(f)]


def prepared_split(folder: Path) -> Path | None:
    """The prepare-data split ``folder`` stands for: itself, its one split (a prepare-data root), or None.

    A root holding several splits is a :class:`UserError` naming them: which one is the real set is the user's call.
    """
    from humanfix.data.records import METADATA

    if (folder / METADATA).is_file():
        return folder
    splits = sorted(p for p in folder.iterdir() if (p / METADATA).is_file()) if folder.is_dir() else []
    if len(splits) > 1:
        names = ", ".join(str(p) for p in splits)
        raise UserError(f"{folder} is a prepare-data output with several splits: pass one of {names}")
    return splits[0] if splits else None


def image_files(folder: str | Path, what: str) -> list[Path]:
    """The images of ``folder`` (see the module docstring): a prepared split's records, else every image below it
    (its ``images/`` subfolder when it has one) except generate's ``grids/``."""
    from humanfix.data.records import read_records

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"{what} folder not found: {folder}")
    split = prepared_split(folder)
    if split is not None:
        files = [split / r.file_name for r in read_records(split)]
        source = split
    else:
        source = folder / "images" if (folder / "images").is_dir() else folder
        files = [f for f in list_images(source) if GRIDS not in f.relative_to(source).parts[:-1]]
    if not files:
        kinds = ", ".join(sorted({e.lower() for e in EXTENSIONS}))
        raise UserError(f"no images found in {source} (looked for {kinds})")
    return files


def real_images(folder: str | Path) -> list[Path]:
    """The real set (``--real``): see :func:`image_files`."""
    return image_files(folder, "--real")


def open_rgb(path: Path) -> Any:
    """The image at ``path`` as an RGB PIL image; an unreadable file is a one-line :class:`UserError`."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Exception as e:
        raise UserError(f"cannot read image {path}: {type(e).__name__}: {e}") from None


def read_generated(folder: str | Path) -> GeneratedSet:
    """A ``--generated`` folder: the images its ``index.jsonl`` names, or every image below it."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserError(f"--generated folder not found: {root}")
    index = root / INDEX
    if not index.is_file():
        files = image_files(root, "--generated")
        items = [ImageItem(path=f, label=root.name or str(root), root=root) for f in files]
        return GeneratedSet(root, items, indexed=False)
    items = [_item(root, rec, n, index) for n, rec in _records(index)]
    if not items:
        raise UserError(f"{index} lists no images")
    return GeneratedSet(root, items, indexed=True)


def _records(index: Path) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for n, line in enumerate(index.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{index} line {n} is not valid JSON: {e}") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("file"), str):
            raise UserError(f'{index} line {n}: expected a JSON object with a "file" string')
        out.append((n, rec))
    return out


def _item(root: Path, rec: dict[str, Any], n: int, index: Path) -> ImageItem:
    rel = Path(rec["file"])
    path = (root / rel).resolve()
    if rel.is_absolute() or not path.is_relative_to(root.resolve()):
        raise UserError(f"{index} line {n}: file {rec['file']!r} is outside {root}")
    if not path.is_file():
        raise UserError(f"{index} line {n}: image {path} not found")
    label = rec.get("label") or rec.get("model") or root.name
    seed = rec.get("seed")
    return ImageItem(
        path=root / rel,
        label=str(label),
        prompt=None if rec.get("prompt") is None else str(rec["prompt"]),
        seed=seed if isinstance(seed, int) else None,
        negative_prompt=None if rec.get("negative_prompt") is None else str(rec["negative_prompt"]),
        root=root,
        record=rec,
    )


def group_by_model(sets: list[GeneratedSet]) -> dict[str, list[ImageItem]]:
    """Images per model label, over every ``--generated`` folder, in input order.

    A label that two folders both use (two plain generate runs are both ``base``) becomes
    ``FOLDER/label`` in each (``K:FOLDER/label`` when folder names clash too, K its position), so models
    from different folders never merge silently.
    """
    owners: dict[str, set[int]] = {}
    for k, s in enumerate(sets):
        for it in s.items:
            owners.setdefault(it.label, set()).add(k)
    names = [s.root.name for s in sets]
    groups: dict[str, list[ImageItem]] = {}
    for k, s in enumerate(sets):
        prefix = s.root.name if names.count(s.root.name) == 1 else f"{k + 1}:{s.root.name}"
        for it in s.items:
            if len(owners[it.label]) > 1:
                it = replace(it, label=f"{prefix}/{it.label}")
            groups.setdefault(it.label, []).append(it)
    return groups
