"""The prepare-data pipeline: COCO -> a human-centric training set (see docs/data.md).

Per split: read the person annotations and filter them (``coco.select``), attach captions, then for
each kept image, in parallel worker processes: read and convert it to RGB, choose its output size and
window (``geometry.plan``: a square or, with ``--buckets``, the nearest aspect-ratio bucket; the window
holding the most of the people, or the centre), resize and crop it, its union person mask, person boxes and
keypoints (``geometry.ResizeCrop``), find and merge the face boxes (``faces``) and the hand boxes
(``hands``), write image, mask and crops, and last a per-image record under ``.records/``.
``metadata.jsonl`` is written at the end from those per-image records, sorted by coco_id.

Resumable: an image whose per-image record exists is not processed again, so a rerun ends with the
same bytes. Every file is written to a temporary name and renamed, so a crash never leaves a
half-written file under a name a reader looks at. Bad images (missing, unreadable, truncated) are
counted in the summary and skipped; grayscale, CMYK and palette images are converted to RGB.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from humanfix.config import to_toml_dict
from humanfix.data import coco
from humanfix.data.faces import detect_faces, keypoint_face_box, merge_faces
from humanfix.data.geometry import BUCKET_STEP, CROPS, bucket_sizes, nearest_bucket, plan
from humanfix.data.hands import HAND_SOURCES, find_hands, load_wholebody
from humanfix.data.records import FACE_SOURCES, Record, write_atomic, write_records
from humanfix.errors import UserError

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
STATE_DIR = ".records"  # per-image records of finished images (what makes a run resumable)
SETTINGS_FILE = ".prepare-settings.json"
FACE_CROP_SIZE = 160
HAND_CROP_SIZE = 64  # the side L_hand resizes hand crops to (see losses/objective.py)
JPEG_QUALITY = 95
COVERAGE_BINS = 10

# Reasons an image is dropped after the annotation filter (the filter's own are in coco.py).
NO_CAPTION = "no_caption"  # the captions file has no caption for it and there is no --default-caption
NO_PERSON_IN_CROP = "no_person_in_crop"  # every person lies mostly outside the output's window
MISSING_IMAGE = "missing_image"  # the image file is not on disk
UNREADABLE_IMAGE = "unreadable_image"  # truncated, corrupt or not an image
SIZE_MISMATCH = "size_mismatch"  # the file's size differs from the annotation's width/height


@dataclass
class PrepareConfig:
    """Settings of ``humanfix prepare-data``; every field is a command-line flag of the same name."""

    RENAMED: ClassVar[dict[str, str]] = {"out": "output"}  # older TOML keys, read with a deprecation line

    # Folder holding annotations/person_keypoints_{split}2017.json, annotations/captions_{split}2017.json
    # and {split}2017/ (the MS COCO 2017 layout). The three flags below override one path each.
    coco_root: Path | None = None
    # The person annotations (segmentation, boxes, keypoints) of one split.
    keypoints: Path | None = None
    # The COCO captions file of one split.
    captions: Path | None = None
    # The folder of one split's images.
    images: Path | None = None
    # "train", "val" or "all" (both; only with --coco-root).
    split: str = "train"
    # Output folder: OUTPUT/{split}/metadata.jsonl, images/, masks/, crops/ and OUTPUT/summary.json.
    output: Path = Path("humanfix-data")
    # Keep images whose union of non-crowd person masks covers at least this fraction of the original.
    # 0.2: people then fill much of the frame (the point of the set) while group and action shots stay in.
    min_coverage: float = 0.2
    # A person counts (gets a box, keypoints, a face) when their mask covers at least this fraction of the
    # image; smaller ones are background people, still in the mask and coverage. 0.01 ≈ 51² px at 512².
    min_person_area: float = 0.01
    # Drop images with more counted persons than this: crowds give tiny faces and tangled boxes.
    max_persons: int = 5
    # Drop images with a crowd annotation: a crowd region has no per-person masks, boxes or keypoints.
    skip_crowd: bool = True
    # Faces whose box is smaller than this many output pixels on its short side get no face box.
    # 32: 4 latent pixels at VAE factor 8, the least a face crop can say anything about a face with.
    min_face_size: int = 32
    # Output side: short side resized to this, then a resolution × resolution window cut (see --crop); with
    # --buckets the output's area is about resolution² instead.
    resolution: int = 512
    # Which square window (or, with --buckets, which thin strip to lose): "people" (the one holding the most
    # labelled keypoints of the counted persons, so heads, hands and feet stay in) or "center" (the middle).
    crop: str = "people"
    # Keep each image at its aspect ratio: the nearest of the buckets of geometry.bucket_sizes (multiples of 64,
    # area about resolution², aspect at most 2:1), losing at most a thin strip. Needs a multiple of 64.
    buckets: bool = False
    # Worker processes for the per-image work (1 = in this process).
    workers: int = field(default_factory=lambda: max(1, min(8, os.cpu_count() or 1)))
    # Process at most this many kept images (the first by coco_id); None = all.
    limit: int | None = None
    # Delete OUT/{split} first instead of resuming it.
    overwrite: bool = False
    # Caption for images without one; without it a missing captions file is an error.
    default_caption: str | None = None
    # Write a square 160² PNG per face box and a PNG per person box under crops/.
    save_crops: bool = True
    # "mtcnn" (facenet-pytorch's, on CPU) or "none" (face boxes from keypoints only).
    face_detector: str = "mtcnn"
    # COCO-WholeBody v1.0 annotation file of the split: its valid hand boxes win over the keypoint ones.
    wholebody: Path | None = None
    # Hands whose box is smaller than this many output pixels on its LONG side get no hand box. 32, as for faces:
    # 4 latent pixels at VAE factor 8; the long side, because L_hand reads the box squared (a hand's box is long).
    min_hand_size: int = 32

    @property
    def out(self) -> Path:
        """The older name of ``output``."""
        return self.output

    def __post_init__(self) -> None:
        for name in ("coco_root", "keypoints", "captions", "images", "output", "wholebody"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value).expanduser())
        checks = [
            (self.split in (*SPLITS, "all"), f"--split must be train, val or all, not {self.split!r}"),
            (0.0 <= self.min_coverage <= 1.0, "--min-coverage must lie in [0, 1]"),
            (0.0 <= self.min_person_area <= 1.0, "--min-person-area must lie in [0, 1]"),
            (self.max_persons >= 1, "--max-persons must be at least 1"),
            (self.min_face_size >= 0, "--min-face-size must be at least 0"),
            (self.min_hand_size >= 0, "--min-hand-size must be at least 0"),
            (self.wholebody is None or self.split != "all", "--wholebody is one split's file: --split train or val"),
            (16 <= self.resolution <= 4096, "--resolution must lie in [16, 4096]"),
            (self.crop in CROPS, f"--crop must be people or center, not {self.crop!r}"),
            (
                not self.buckets or self.resolution % BUCKET_STEP == 0,
                f"--buckets needs --resolution a multiple of {BUCKET_STEP} (got {self.resolution})",
            ),
            (self.workers >= 1, "--workers must be at least 1"),
            (self.limit is None or self.limit >= 1, "--limit must be at least 1"),
            (self.face_detector in ("mtcnn", "none"), "--face-detector must be mtcnn or none"),
            (self.default_caption is None or self.default_caption.strip() != "", "--default-caption is empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def output_settings(self) -> dict[str, Any]:
        """The settings the output depends on: a resumed run must use the same ones."""
        keys = ("min_coverage", "min_person_area", "max_persons", "skip_crowd", "min_face_size", "resolution",
                "default_caption", "save_crops", "face_detector", "crop", "buckets", "min_hand_size")  # fmt: skip
        return {k: getattr(self, k) for k in keys} | {"wholebody": str(self.wholebody) if self.wholebody else None}


@dataclass(frozen=True)
class SplitSources:
    split: str
    keypoints: Path
    captions: Path | None  # None: every image gets --default-caption
    images: Path


def split_sources(config: PrepareConfig) -> list[SplitSources]:
    """The files each requested split reads; a missing file or folder is a :class:`UserError`."""
    splits = list(SPLITS) if config.split == "all" else [config.split]
    explicit = [f"--{n}" for n in ("keypoints", "captions", "images") if getattr(config, n) is not None]
    if len(splits) > 1 and explicit:
        raise UserError(f"{', '.join(explicit)} name one split's files: use --split train or --split val")
    if config.coco_root is None and (config.keypoints is None or config.images is None):
        raise UserError("say where COCO is: --coco-root DIR, or --keypoints FILE and --images DIR")
    if config.coco_root is not None and not config.coco_root.is_dir():
        raise UserError(f"--coco-root folder not found: {config.coco_root}")
    out = []
    for split in splits:
        root = config.coco_root
        kp = config.keypoints or root / "annotations" / f"person_keypoints_{split}2017.json"  # type: ignore[operator]
        images = config.images or root / f"{split}2017"  # type: ignore[operator]
        if not kp.is_file():
            raise UserError(f"person keypoints annotation file not found: {kp}")
        if not images.is_dir():
            raise UserError(f"image folder not found: {images}")
        if config.captions is not None:
            captions: Path | None = config.captions
            if not captions.is_file():
                raise UserError(f"captions file not found: {captions}")
        elif root is not None and (root / "annotations" / f"captions_{split}2017.json").is_file():
            captions = root / "annotations" / f"captions_{split}2017.json"
        elif config.default_caption is not None:
            captions = None
        else:
            where = f" (looked for {root / 'annotations' / f'captions_{split}2017.json'})" if root else ""
            raise UserError(
                f"no captions file for {split}{where}: pass --captions FILE, or --default-caption TEXT "
                "to give every image the same caption"
            )
        out.append(SplitSources(split, kp, captions, images))
    return out


@dataclass(frozen=True)
class Job:
    """One image's work, sent to a worker process."""

    image: dict[str, Any]  # COCO image entry
    persons: list[dict[str, Any]]  # counted person annotations
    segmentations: list[Any]  # every non-crowd person's segmentation
    text: list[str]
    wholebody: tuple[Any, ...] = ()  # per counted person: its COCO-WholeBody hands {side: box} or None


@dataclass(frozen=True)
class WorkerSettings:
    images: Path
    split_dir: Path
    resolution: int
    min_face_size: int
    save_crops: bool
    face_detector: str
    crop: str = "people"
    buckets: bool = False
    min_hand_size: int = 32

    def size(self, width: int, height: int) -> tuple[int, int]:
        """The output size of a ``width × height`` source: the square, or the nearest bucket."""
        if not self.buckets:
            return (self.resolution, self.resolution)
        return nearest_bucket(width, height, bucket_sizes(self.resolution))


@dataclass
class Outcome:
    coco_id: int
    record: Record | None
    reason: str | None = None  # why it was dropped, when record is None
    small_faces: int = 0  # faces found but below --min-face-size or outside the crop
    kept: dict[str, list[int]] = field(default_factory=dict)  # "keypoints"/"faces": [in the output, of counted]
    small_hands: int = 0  # hands found but below --min-hand-size or outside the crop


def prepare(config: PrepareConfig) -> dict[str, Any]:
    """Run prepare-data for the configured split(s); returns the summary also written to OUT/summary.json.

    OUT is locked for the run (:mod:`humanfix.runlock`): a second prepare-data into it stops with one line.
    """
    from humanfix.runlock import hold

    sources = split_sources(config)
    with hold(config.output, "prepare-data"):
        return _prepare_locked(config, sources)


def _prepare_locked(config: PrepareConfig, sources: list[SplitSources]) -> dict[str, Any]:
    config.output.mkdir(parents=True, exist_ok=True)
    filters = coco.Filters(config.min_coverage, config.min_person_area, config.max_persons, config.skip_crowd)
    started = time.perf_counter()
    summary_path = config.output / "summary.json"
    previous: dict[str, Any] = {}
    if summary_path.is_file():
        try:
            previous = json.loads(summary_path.read_text()).get("splits", {})
        except (json.JSONDecodeError, AttributeError):
            previous = {}
    splits = {**previous}
    for src in sources:
        splits[src.split] = _prepare_split(config, src, filters)
    summary = {
        "settings": to_toml_dict(config),
        "splits": {k: splits[k] for k in sorted(splits)},
        "time_s": round(time.perf_counter() - started, 2),
    }
    write_atomic(summary_path, (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def _prepare_split(config: PrepareConfig, src: SplitSources, filters: coco.Filters) -> dict[str, Any]:
    t0 = time.perf_counter()
    split_dir = config.output / src.split
    _claim(split_dir, config)
    sel = coco.select(coco.load_json(src.keypoints, "person keypoints annotation file"), filters)
    captions = coco.load_captions(src.captions) if src.captions else {}
    dropped: Counter = Counter(sel.dropped)
    wholebody = load_wholebody(config.wholebody) if config.wholebody else {}
    jobs = []
    for c in sel.candidates:
        text = captions.get(c.image["id"]) or ([config.default_caption] if config.default_caption else [])
        if not text:
            dropped[NO_CAPTION] += 1
            continue
        wb = tuple(wholebody.get(p.get("id")) for p in c.persons) if wholebody else ()
        jobs.append(Job(c.image, c.persons, c.segmentations, text, wb))
    not_processed = 0
    if config.limit is not None and len(jobs) > config.limit:
        not_processed, jobs = len(jobs) - config.limit, jobs[: config.limit]

    settings = WorkerSettings(src.images, split_dir, config.resolution, config.min_face_size,
                              config.save_crops, config.face_detector, config.crop, config.buckets,
                              config.min_hand_size)  # fmt: skip
    records: list[Record] = []
    kept = {"keypoints": [0, 0], "faces": [0, 0]}  # [inside the output, of the counted persons'] (kept_in_output)
    todo = []
    for job in jobs:
        done = _finished(split_dir, job.image["id"])
        if done is not None:
            records.append(done[0])
            _add_kept(kept, done[1])
        else:
            todo.append(job)
    small_faces, small_hands, done = 0, 0, 0
    try:
        for outcome in _run(todo, settings, config.workers, f"{src.split}: {len(todo)} to do, {len(records)} done"):
            done += 1
            if outcome.record is not None:
                records.append(outcome.record)
            else:
                dropped[outcome.reason] += 1
            _add_kept(kept, outcome.kept)  # images dropped as no_person_in_crop lost all of their people
            small_faces += outcome.small_faces
            small_hands += outcome.small_hands
        write_records(split_dir, records)
    except Exception as e:
        _raise_if_disk_full(e, split_dir, len(records), len(todo) - done)
        raise

    faces = Counter(s for r in records for s in r.face_sources)
    hands = Counter(s for r in records for s in r.hand_sources)
    hist, _ = np.histogram([r.coverage for r in records], bins=COVERAGE_BINS, range=(0.0, 1.0))
    return {
        "seen": sel.seen,
        "kept": len(records),
        "dropped": dict(sorted(dropped.items())),
        "not_processed_limit": not_processed,
        "reused": len(jobs) - len(todo),
        "persons": sum(len(r.person_boxes) for r in records),
        "faces": {s: faces.get(s, 0) for s in FACE_SOURCES},
        "faces_below_min_size_this_run": small_faces,
        "hands": {s: hands.get(s, 0) for s in HAND_SOURCES},
        "hands_below_min_size_this_run": small_hands,
        "coverage_histogram": {
            "edges": [round(i / COVERAGE_BINS, 2) for i in range(COVERAGE_BINS + 1)],
            "counts": hist.tolist(),
        },
        # The counted persons' labelled keypoints (and face boxes, at least half inside) that land inside the
        # output image, of all of theirs in the original photo: over the kept images and those dropped as
        # no_person_in_crop (which keep none).
        "kept_in_output": {
            k: {"kept": a, "of": b, "fraction": round(a / b, 4) if b else None} for k, (a, b) in kept.items()
        },
        "buckets": dict(
            sorted(Counter(f"{r.width}x{r.height}" for r in records).items(), key=lambda kv: (-kv[1], kv[0]))
        ),  # images per output size, the most common first
        "sources": {
            "keypoints": str(src.keypoints),
            "captions": str(src.captions) if src.captions else None,
            "images": str(src.images),
        },  # fmt: skip
        "time_s": round(time.perf_counter() - t0, 2),
    }


def _raise_if_disk_full(e: BaseException, split_dir: Path, finished: int, left: int) -> None:
    """A full disk (ENOSPC) as one line: the folder, about the room the images left need, what to do."""
    from humanfix.diskfull import disk_full_error, folder_bytes, is_disk_full

    if is_disk_full(e):
        per_image = folder_bytes(split_dir) / max(1, finished)
        advice = "free some space and rerun the same command: it resumes where it stopped, finished images kept"
        raise disk_full_error(split_dir, int(per_image * max(1, left)), f"{left} more image(s)", advice) from None


def _claim(split_dir: Path, config: PrepareConfig) -> None:
    """Make ``split_dir`` ours: wipe it with --overwrite, refuse to resume it under other settings."""
    settings_path = split_dir / SETTINGS_FILE
    if config.overwrite and split_dir.exists():
        shutil.rmtree(split_dir)
    if split_dir.exists() and any(split_dir.iterdir()):
        if not settings_path.is_file():
            raise UserError(
                f"{split_dir} exists and was not written by prepare-data: pass --overwrite or another --output"
            )
        old, new = json.loads(settings_path.read_text()), config.output_settings()
        if old != new:
            diff = sorted(k for k in {**old, **new} if old.get(k) != new.get(k))
            raise UserError(
                f"{split_dir} was prepared with other settings ({', '.join(diff)}): pass --overwrite to redo it, "
                "or another --output"
            )
    write_atomic(settings_path, (json.dumps(config.output_settings(), sort_keys=True) + "\n").encode())
    for tmp in split_dir.rglob(".*.tmp"):  # left by a crashed run; never read
        tmp.unlink(missing_ok=True)


def _finished(split_dir: Path, coco_id: int) -> tuple[Record, dict[str, list[int]]] | None:
    """The record of an image a previous run finished (its files all exist) and its kept counts, or None."""
    path = split_dir / STATE_DIR / f"{coco_id}.json"
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
        rec, kept = Record.from_json(text), json.loads(text)["kept"]
    except (ValueError, TypeError, KeyError):
        return None
    if rec.coco_id != coco_id or not all((split_dir / p).is_file() for p in rec.paths()):
        return None
    return rec, kept


def _add_kept(total: dict[str, list[int]], kept: dict[str, list[int]]) -> None:
    for k, (a, b) in kept.items():
        total[k][0] += a
        total[k][1] += b


def _run(jobs: list[Job], settings: WorkerSettings, workers: int, title: str):
    """Yield one Outcome per job, from worker processes when ``workers`` > 1, with a progress bar."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(title, total=len(jobs))
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                yield process_image(job, settings)
                progress.advance(task)
            return
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # torch and fork do not mix
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(settings.face_detector,)) as pool:  # fmt: skip
            futures = [pool.submit(process_image, job, settings) for job in jobs]
            try:
                for fut in as_completed(futures):
                    yield fut.result()
                    progress.advance(task)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise


def _init_worker(face_detector: str) -> None:
    import torch

    torch.set_num_threads(1)
    if face_detector == "mtcnn":
        from humanfix.data.faces import detector

        detector()


def _box_xyxy(ann: dict[str, Any]) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in ann["bbox"])
    return (x, y, x + w, y + h)


def process_image(job: Job, s: WorkerSettings) -> Outcome:
    """Everything for one image: read, transform, faces, write files, then the per-image record."""
    from PIL import Image

    im = job.image
    cid, w, h = int(im["id"]), int(im["width"]), int(im["height"])
    all_kps = [np.asarray(a.get("keypoints") or [0] * 51, dtype=np.float64).reshape(17, 3) for a in job.persons]
    t = plan(w, h, s.size(w, h), s.crop, all_kps, [_box_xyxy(a) for a in job.persons])

    persons = []  # (source box, output box, keypoints 17×3)
    wholebody = []  # per kept person: its WholeBody hands or None
    for k, a in enumerate(job.persons):
        out_box = t.box(_box_xyxy(a))
        if out_box is not None:
            kps = np.asarray(a.get("keypoints") or [0] * 51, dtype=np.float64).reshape(17, 3)
            persons.append((_box_xyxy(a), out_box, kps))
            wholebody.append(job.wholebody[k] if job.wholebody else None)
    if not persons:  # nobody in the output: every keypoint and face of theirs lost (faces: from keypoints)
        faces = sum(keypoint_face_box(k, _box_xyxy(a)) is not None for k, a in zip(all_kps, job.persons, strict=True))
        labelled = int(sum((k[:, 2] > 0).sum() for k in all_kps))
        return Outcome(cid, None, NO_PERSON_IN_CROP, kept={"keypoints": [0, labelled], "faces": [0, faces]})

    path = s.images / im["file_name"]
    if not path.is_file():
        return Outcome(cid, None, MISSING_IMAGE)
    try:
        with Image.open(path) as f:
            f.load()
            rgb = f.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        log.warning("%s: unreadable image, skipped (%s)", path, e)
        return Outcome(cid, None, UNREADABLE_IMAGE)
    if rgb.size != (w, h):
        log.warning("%s: image is %s, annotation says %s; skipped", path, rgb.size, (w, h))
        return Outcome(cid, None, SIZE_MISMATCH)

    out_img = t.image(rgb)
    full_mask = coco.union_mask(job.segmentations, h, w)
    coverage = round(float(full_mask.mean()), 6)  # the same number coco.coverage gives, from the same RLE
    mask = t.mask(full_mask)

    # Faces, found in the original image, then mapped and filtered in output pixels.
    person_src = [p[0] for p in persons]
    kp_boxes = [keypoint_face_box(p[2], p[0]) for p in persons]
    detections = []
    if s.face_detector == "mtcnn":
        min_src = 0.7 * s.min_face_size / min(t.sx, t.sy)
        detections = [b for b, _ in detect_faces(rgb, min_size=min_src)]
    all_src = [_box_xyxy(a) for a in job.persons]
    all_faces = merge_faces([keypoint_face_box(k, b) for k, b in zip(all_kps, all_src, strict=True)], all_src,
                            detections)  # fmt: skip
    face_boxes, face_sources, small = [], [], 0
    for face in merge_faces(kp_boxes, person_src, detections):
        fb = t.box(face.box)
        if fb is None or min(fb[2] - fb[0], fb[3] - fb[1]) < s.min_face_size:
            small += 1
            continue
        face_boxes.append(fb)
        face_sources.append(face.source)

    # Hands: WholeBody's or from keypoints, in original pixels, mapped by the same box transform as faces.
    hand_boxes, hand_sides, hand_sources, small_hands = [], [], [], 0
    for hand in find_hands([(kps, src, wb) for (src, _, kps), wb in zip(persons, wholebody, strict=True)]):
        hb = t.box(hand.box)
        if hb is None or max(hb[2] - hb[0], hb[3] - hb[1]) < s.min_hand_size:  # the square L_hand reads
            small_hands += 1
            continue
        hand_boxes.append(hb)
        hand_sides.append(hand.side)
        hand_sources.append(hand.source)

    keypoints = []
    for _, _, kps in persons:
        xy = t.points(kps[:, :2])
        keypoints.append([
            [round(float(x), 2), round(float(y), 2), int(v)] if v > 0 else [0.0, 0.0, 0]
            for (x, y), v in zip(xy, kps[:, 2], strict=True)
        ])  # fmt: skip

    file_name, mask_name = f"images/{cid}.jpg", f"masks/{cid}.png"
    write_atomic(s.split_dir / file_name, _encode(out_img, "JPEG", quality=JPEG_QUALITY))
    write_atomic(s.split_dir / mask_name, _encode(Image.fromarray(mask, mode="L"), "PNG"))
    face_files, person_files, hand_files = [], [], []
    if s.save_crops:
        for k, fb in enumerate(face_boxes):
            name = f"crops/faces/{cid}_{k}.png"
            crop = out_img.crop(_square(fb)).resize((FACE_CROP_SIZE, FACE_CROP_SIZE), Image.Resampling.BICUBIC)
            write_atomic(s.split_dir / name, _encode(crop, "PNG"))
            face_files.append(name)
        for k, (_, pb, _) in enumerate(persons):
            name = f"crops/persons/{cid}_{k}.png"
            write_atomic(s.split_dir / name, _encode(out_img.crop(tuple(pb)), "PNG"))
            person_files.append(name)
        for k, hb in enumerate(hand_boxes):
            name = f"crops/hands/{cid}_{k}.png"
            crop = out_img.crop(_square(hb)).resize((HAND_CROP_SIZE, HAND_CROP_SIZE), Image.Resampling.BICUBIC)
            write_atomic(s.split_dir / name, _encode(crop, "PNG"))
            hand_files.append(name)

    rec = Record(
        file_name=file_name, mask_file_name=mask_name, text=list(job.text),
        person_boxes=[p[1] for p in persons], face_boxes=face_boxes, face_sources=face_sources,
        keypoints=keypoints, coverage=coverage, coco_id=cid, width=t.width, height=t.height,
        face_crop_files=face_files, person_crop_files=person_files, window=t.window,
        hand_boxes=hand_boxes, hand_sides=hand_sides, hand_sources=hand_sources, hand_crop_files=hand_files,
    )  # fmt: skip
    kept = {
        "keypoints": [sum(1 for person in keypoints for x, y, v in person if v > 0 and 0 <= x < t.width
                          and 0 <= y < t.height), int(sum((k[:, 2] > 0).sum() for k in all_kps))],
        "faces": [sum(1 for f in all_faces if t.box(f.box) is not None), len(all_faces)],
    }  # fmt: skip
    state = {**json.loads(rec.to_json()), "kept": kept}
    write_atomic(s.split_dir / STATE_DIR / f"{cid}.json", (json.dumps(state) + "\n").encode())  # last: "done"
    return Outcome(cid, rec, small_faces=small, kept=kept, small_hands=small_hands)


def _square(box: list[int]) -> tuple[int, int, int, int]:
    """The square of side max(w, h) centred on ``box`` (may reach outside the image; PIL pads it black)."""
    side = max(box[2] - box[0], box[3] - box[1])
    x0 = int(math.floor((box[0] + box[2] - side) / 2))
    y0 = int(math.floor((box[1] + box[3] - side) / 2))
    return (x0, y0, x0 + side, y0 + side)


def _encode(img: Any, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, ...]]:
    """The summary as (what, split1, split2, ...) rows, for the rich table the CLI prints."""
    splits = summary["splits"]
    names = list(splits)
    reasons = sorted({r for s in splits.values() for r in s["dropped"]})
    rows = [("seen", *(str(splits[n]["seen"]) for n in names)), ("kept", *(str(splits[n]["kept"]) for n in names))]
    rows += [(f"dropped: {r}", *(str(splits[n]["dropped"].get(r, 0)) for n in names)) for r in reasons]
    rows += [("not processed (--limit)", *(str(splits[n]["not_processed_limit"]) for n in names))]
    rows += [("persons", *(str(splits[n]["persons"]) for n in names))]
    rows += [(f"faces: {s}", *(str(splits[n]["faces"][s]) for n in names)) for s in FACE_SOURCES]
    rows += [(f"hands: {s}", *(str(splits[n].get("hands", {}).get(s, 0)) for n in names)) for s in HAND_SOURCES]
    rows += [("coverage histogram (0.1 bins)", *(" ".join(map(str, splits[n]["coverage_histogram"]["counts"]))
                                                 for n in names))]  # fmt: skip
    for key, what in (("keypoints", "keypoints kept in the output"), ("faces", "face boxes kept in the output")):
        rows += [(what, *(_fraction(splits[n].get("kept_in_output", {}).get(key)) for n in names))]
    sizes = sorted({b for n in names for b in splits[n].get("buckets", {})},
                   key=lambda b: (-max(splits[n].get("buckets", {}).get(b, 0) for n in names), b))  # fmt: skip
    rows += [(f"images {b}", *(str(splits[n].get("buckets", {}).get(b, 0)) for n in names)) for b in sizes]
    rows += [("time (s)", *(str(splits[n]["time_s"]) for n in names))]
    return rows


def _fraction(kept: dict[str, Any] | None) -> str:
    if not kept or not kept["of"]:
        return "-"
    return f"{kept['fraction']:.1%} ({kept['kept']}/{kept['of']})"
