"""``humanfix evaluate``: the sets -> features -> FID/KID (+ bootstrap) -> faces, CLIP, poses -> metrics.json -> report.

Every ``--generated`` folder is split by model (a ``--compare`` output holds several); each model is
scored against the one real set (``--real DIR`` or ``--real-stats NAME``). ``--ratings`` files are
summarised on their own or alongside. Results: ``OUTPUT/metrics.json`` (and ``ratings.json``,
``pose.jsonl``, ``report.html``), and a table on stdout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from humanfix.devices import resolve_device
from humanfix.errors import UserError
from humanfix.evaluate.faces import DEFAULT_CLIP
from humanfix.evaluate.fid import FEW_IMAGES, MODES
from humanfix.evaluate.persons import WEIGHTS as POSE_WEIGHTS

POSE_REFERENCES = ("detector", "ground-truth")


@dataclass
class EvaluateConfig:
    """What to measure on which images. Paths may be strings in TOML."""

    generated: tuple[Path, ...] = ()  # generate outputs (index.jsonl + PNGs, --compare ones too) or image folders
    real: Path | None = None  # a prepare-data split folder (its images/ is used) or any image folder
    real_stats: str | None = None  # use the real features saved earlier under this name instead of --real
    save_stats: str | None = None  # save the --real set's features under this name ($HUMANFIX_HOME/fid-stats)
    output: Path = Path("outputs/evaluate")  # metrics.json, ratings.json, report.html go here
    fid: bool = False  # FID of each model against the real set (clean-fid's Inception features)
    kid: bool = False  # KID too (clean-fid's kernel_distance; unbiased, better at small N)
    bootstrap: int = 0  # resamples of the generated set for FID's 95% interval (0: none; >0 implies fid)
    mode: str = "clean"  # clean-fid mode: "clean" or "legacy_tensorflow"
    inception_weights: Path | None = None  # clean-fid's inception-2015-12-05.pt (default: where clean-fid keeps it)
    faces: bool = False  # MTCNN face detection rate and confidence; face-crop FID when --fid and --real
    face_threshold: float = 0.9  # a detection counts as a face from this MTCNN probability on
    face_margin: float = 0.2  # face crops: this fraction of the box's longer side added on each side
    clip: bool = False  # CLIP score of each image against its prompt, when the CLIP weights are on disk
    clip_model: str = DEFAULT_CLIP  # CLIP model: hub id (local cache only) or folder
    pose: bool = False  # persons (detector) and their 17 keypoints (ViTPose) per image: rates and plausibility
    pose_detector: str | None = None  # person detector: hub id (local cache) or folder (None: RT-DETR default)
    pose_estimator: str | None = None  # ViTPose: hub id (local cache) or folder (None: vitpose-base-simple)
    pose_weights: str = "pretrained"  # "pretrained", or "random" (tiny stand-ins: the numbers mean nothing)
    pose_reference: str = "detector"  # the real row: "detector" (the models on --real) or "ground-truth"
    person_threshold: float = 0.5  # a detection counts as a person from this probability on
    keypoint_threshold: float = 0.3  # a keypoint counts from this confidence on (fewer: not judged)
    pose_bootstrap: int = 1000  # resamples of the images for the pose rates' 95% intervals (0: none)
    report: bool = False  # write OUTPUT/report.html (metrics, images per prompt, blind A/B)
    report_images: str = "embed"  # "embed" (data URIs: one self-contained file) or "link" (relative paths)
    ratings: tuple[Path, ...] = ()  # A/B choices files downloaded from report.html, summarised per model pair
    device: str = "auto"  # "auto" (cuda when present), "cpu", "cuda", "cuda:1", ...
    batch_size: int = 32  # images per Inception forward (and per pose-detector forward)
    num_workers: int | None = None  # image-loading processes (None: 0 on CPU, up to 8 on GPU)
    seed: int = 0  # bootstrap resamples, KID subsets, A/B sides and order

    def __post_init__(self) -> None:
        self.generated = tuple(Path(g) for g in self.generated)
        self.ratings = tuple(Path(r) for r in self.ratings)
        self.output = Path(self.output)
        if self.mode not in MODES:
            raise UserError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.report_images not in ("embed", "link"):
            raise UserError(f"--report-images must be embed or link, got {self.report_images!r}")
        if self.bootstrap < 0:
            raise UserError(f"--bootstrap must be >= 0, got {self.bootstrap}")
        if self.bootstrap:
            self.fid = True
        if not 0 < self.face_threshold <= 1:
            raise UserError(f"--face-threshold must be in (0, 1], got {self.face_threshold}")
        if self.face_margin < 0:
            raise UserError(f"--face-margin must be >= 0, got {self.face_margin}")
        if self.pose_weights not in POSE_WEIGHTS:
            raise UserError(f"--pose-weights must be one of {', '.join(POSE_WEIGHTS)}, got {self.pose_weights!r}")
        if self.pose_reference not in POSE_REFERENCES:
            choices = ", ".join(POSE_REFERENCES)
            raise UserError(f"--pose-reference must be one of {choices}, got {self.pose_reference!r}")
        if self.pose_reference == "ground-truth" and self.real is None:
            raise UserError("--pose-reference ground-truth reads the keypoints of --real DIR (a prepare-data split)")
        if not 0 < self.person_threshold < 1 or not 0 <= self.keypoint_threshold < 1:
            raise UserError("--person-threshold must be in (0, 1) and --keypoint-threshold in [0, 1)")
        if self.pose_bootstrap < 0:
            raise UserError(f"--pose-bootstrap must be >= 0, got {self.pose_bootstrap}")
        if self.batch_size < 1 or (self.num_workers is not None and self.num_workers < 0):
            raise UserError("--batch-size must be >= 1 and --num-workers >= 0")
        if self.real is not None and self.real_stats is not None:
            raise UserError("give either --real or --real-stats, not both")
        if self.save_stats is not None and self.real is None:
            raise UserError("--save-stats NAME saves the --real set's features: pass --real DIR")
        if (self.fid or self.kid) and (self.real is None and self.real_stats is None):
            raise UserError("FID/KID need a real set: pass --real DIR or --real-stats NAME")
        wants_images = self.fid or self.kid or self.faces or self.clip or self.pose or self.report
        if wants_images and not self.generated:
            raise UserError("pass --generated DIR (a generate output or an image folder)")
        if not (wants_images or self.ratings or self.save_stats):
            raise UserError(
                "nothing to do: pass --fid, --kid, --faces, --clip, --pose, --report, --ratings or --save-stats"
            )


@dataclass
class EvaluateResult:
    """What an evaluation wrote and found."""

    output: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    metrics_path: Path | None = None
    ratings: list[dict[str, Any]] = field(default_factory=list)
    ratings_path: Path | None = None
    report_path: Path | None = None
    pose_path: Path | None = None  # pose.jsonl: every image's persons, keypoints and scores


def evaluate(config: EvaluateConfig, print_tables: bool = True) -> EvaluateResult:
    """Run every measurement the config asks for; write metrics.json / ratings.json / report.html."""
    from humanfix.evaluate import sets

    out = config.output
    out.mkdir(parents=True, exist_ok=True)
    result = EvaluateResult(out)
    if config.ratings:
        result.ratings, result.ratings_path = _ratings(config)
    groups = sets.group_by_model([sets.read_generated(g) for g in config.generated])
    real_files = sets.real_images(config.real) if config.real is not None else None
    skeletons: dict[Path, dict[str, Any]] = {}  # generated image -> its persons, for the report's overlay
    if config.fid or config.kid or config.faces or config.clip or config.pose or config.save_stats:
        result.metrics = _measure(config, groups, real_files, skeletons)
        result.metrics_path = out / "metrics.json"
        result.metrics_path.write_text(json.dumps(result.metrics, indent=2, ensure_ascii=False) + "\n")
        if config.pose:
            result.pose_path = out / "pose.jsonl"
    if config.report:
        from humanfix.evaluate.report import write_report

        inputs = [f"--generated {g}" for g in config.generated]
        inputs += [f"--real {config.real}"] if config.real else []
        inputs += [f"--real-stats {config.real_stats}"] if config.real_stats else []
        result.report_path = write_report(
            out / "report.html",
            groups,
            metrics=result.metrics,
            ratings=result.ratings,
            embed=config.report_images == "embed",
            seed=config.seed,
            inputs=inputs,
            skeletons=skeletons,
            keypoint_threshold=config.keypoint_threshold,
        )
    if print_tables:
        print_result(result)
    return result


def _ratings(config: EvaluateConfig) -> tuple[list[dict[str, Any]], Path]:
    from humanfix.evaluate.ratings import read_all, summarize

    judgements = read_all(config.ratings)
    pairs = [p.as_dict() for p in summarize(judgements)]
    path = config.output / "ratings.json"
    doc = {"files": [str(r) for r in config.ratings], "n_judgements": len(judgements), "pairs": pairs}
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return pairs, path


def _measure(
    config: EvaluateConfig, groups: dict, real_files: list[Path] | None, skeletons: dict[Path, dict[str, Any]]
) -> dict[str, Any]:
    """The metrics.json document (see docs/evaluate.md for its keys); fills ``skeletons`` with --pose."""
    from humanfix.evaluate import faces as F
    from humanfix.evaluate import fid as M

    device = resolve_device(config.device)
    workers = config.num_workers if config.num_workers is not None else (0 if device.type == "cpu" else 8)
    workers = min(workers, os.cpu_count() or 1)
    metrics: dict[str, Any] = {"device": str(device)}
    notes: list[str] = []

    def features(files: list[Path], what: str):
        return M.image_features(files, ext, config.batch_size, workers, progress=f"Inception features: {what}")

    real_feats = real_moments = ext = None
    if config.fid or config.kid or config.save_stats:
        ext = M.load_inception(config.inception_weights, config.mode, device)
        metrics.update(mode=config.mode, feature_extractor=ext.describe())
        if real_files is not None:
            real_feats, source = features(real_files, "real"), str(config.real)
            if config.save_stats:
                metrics["saved_stats"] = str(M.save_stats(config.save_stats, real_feats, ext, source))
        else:
            real_feats, source = M.load_stats(config.real_stats, ext)
            source = f"{source} (saved statistics {config.real_stats!r})"
        metrics["n_real"] = len(real_feats)
        metrics["real"] = {"source": source}
        if config.fid:
            real_moments = M.Moments(real_feats)
    elif config.real is not None:
        metrics["real"] = {"source": str(config.real)}
        metrics["n_real"] = len(real_files)

    detector = real_crops = clip = None
    if config.faces:
        detector = F.load_detector(device)
        if real_files is not None:
            real_dets = F.detect_faces(real_files, detector, progress="MTCNN: real")
            metrics["real"]["faces"] = F.summarize(real_dets, config.face_threshold).as_dict()
            if config.fid:
                real_crops = F.face_crops(real_files, real_dets, config.face_threshold, config.face_margin)
        if config.fid and real_crops is None:
            notes.append("face-crop FID skipped: it needs real images (--real), not saved statistics")
    if config.clip:
        clip = F.load_clip(config.clip_model, device)
        if isinstance(clip, str):
            notes.append(clip)
            clip = None

    real_face_moments = None
    if real_crops is not None and len(real_crops) >= 2:
        real_face_moments = M.Moments(M.array_features(real_crops, ext, config.batch_size))
        metrics["real"]["n_face_crops"] = len(real_crops)
    elif real_crops is not None:
        notes.append(f"face-crop FID skipped: {len(real_crops)} face(s) found in the real set (needs 2)")

    models: dict[str, dict[str, Any]] = {}
    for label, items in groups.items():
        files = [it.path for it in items]
        m: dict[str, Any] = {"n_generated": len(files), "folders": sorted({str(it.root) for it in items})}
        if config.fid or config.kid:
            gen_feats = features(files, label)
            if config.fid:
                gen_moments = M.Moments(gen_feats)
                m["fid"] = M.frechet(real_moments, gen_moments)
                if config.bootstrap:
                    bs = M.bootstrap_fid(real_moments, gen_feats, config.bootstrap, config.seed)
                    m["fid_interval"] = [bs.low, bs.high]
                    m["fid_bootstrap"] = {"resamples": config.bootstrap, "bias": bs.bias, "seed": config.seed}
            if config.kid:
                m["kid"] = M.kid_from_features(real_feats, gen_feats, config.seed)
        if detector is not None:
            dets = F.detect_faces(files, detector, progress=f"MTCNN: {label}")
            m["faces"] = F.summarize(dets, config.face_threshold).as_dict()
            if real_face_moments is not None:
                crops = F.face_crops(files, dets, config.face_threshold, config.face_margin)
                m["n_face_crops"] = len(crops)
                if len(crops) >= 2:
                    m["face_fid"] = M.frechet(real_face_moments, M.Moments(M.array_features(crops, ext)))
                else:
                    notes.append(f"face-crop FID of {label} skipped: {len(crops)} face(s) found (needs 2)")
        if clip is not None:
            cs = F.clip_score(files, [it.prompt for it in items], clip)
            m["clip_score"], m["n_clip"] = cs.score, cs.n
            if cs.note:
                notes.append(f"{label}: {cs.note}")
        models[label] = m
    if config.pose:
        metrics["pose_setup"] = _measure_pose(config, groups, real_files, device, models, metrics, notes, skeletons)
    if config.clip and clip is not None:
        metrics["clip_model"] = config.clip_model
    if config.faces:
        metrics["face_threshold"] = config.face_threshold

    if (config.fid or config.kid) and models:
        n_min = min([metrics["n_real"]] + [m["n_generated"] for m in models.values()])
        if n_min < FEW_IMAGES:
            msg = (
                f"FID/KID on fewer than {FEW_IMAGES:,} images (smallest set: {n_min}): FID is biased upwards and "
                "noisy at this size; compare models only at equal N"
                + ("" if config.bootstrap else " and add --bootstrap N for an interval")
            )
            notes.append(msg)
    metrics["models"] = models
    if len(models) == 1:  # one model: its numbers at the top level too
        only = next(iter(models.values()))
        for key in ("fid", "fid_interval", "kid", "n_generated", "faces", "face_fid", "clip_score", "pose"):
            if key in only:
                metrics[key] = only[key]
    metrics["notes"] = notes
    return metrics


def _measure_pose(
    config: EvaluateConfig,
    groups: dict,
    real_files: list[Path] | None,
    device: Any,
    models: dict[str, dict[str, Any]],
    metrics: dict[str, Any],
    notes: list[str],
    skeletons: dict[Path, dict[str, Any]],
) -> dict[str, Any]:
    """Pose metrics per model (and for the real set) into ``models``/``metrics``; writes OUTPUT/pose.jsonl.

    Returns the ``pose_setup`` block of metrics.json: the models, thresholds and bootstrap settings.
    """
    from humanfix.evaluate import persons
    from humanfix.evaluate import pose as P
    from humanfix.models.tiny_pose import RANDOM_NOTICE

    truth = real_files is not None and config.pose_reference == "ground-truth"
    pm = persons.load_pose_models(config.pose_detector, config.pose_estimator, config.pose_weights, device, config.seed)
    info: dict[str, Any] = {
        **pm.describe(),
        "person_threshold": config.person_threshold,
        "keypoint_threshold": config.keypoint_threshold,
        "plausible_from": P.PLAUSIBLE,
        "min_body_keypoints": P.MIN_BODY_KEYPOINTS,
        "reference": config.pose_reference if real_files is not None else None,
        "bootstrap": {"resamples": config.pose_bootstrap, "seed": config.seed, "over": "images"},
        "per_image": "pose.jsonl",
    }
    if pm.weights == "random":
        info["label"] = RANDOM_NOTICE
        notes.append(f"pose: {RANDOM_NOTICE}")
    lines: list[str] = []

    def measure(label: str, images: list, ground_truth: bool, overlay: bool) -> dict[str, Any]:
        threshold = 0.0 if ground_truth else config.keypoint_threshold
        summary, verdicts = P.summarize(images, threshold, config.pose_bootstrap, config.seed, ground_truth)
        if summary["n_persons"] == 0:
            notes.append(
                f"pose, {label}: no person found in {summary['n_images']} image(s) "
                f"(--person-threshold {config.person_threshold}): no plausibility"
            )
        elif summary["n_scored"] == 0:
            notes.append(
                f"pose, {label}: none of {summary['n_persons']} person(s) has {P.MIN_BODY_KEYPOINTS} body keypoints"
                + ("" if ground_truth else f" at or above --keypoint-threshold {config.keypoint_threshold}")
                + ": no plausibility"
            )
        for im, vs in zip(images, verdicts, strict=True):
            people = [_person_json(im, p, v) for p, v in enumerate(vs)]
            doc = {"model": label, "file": str(im.path), "width": im.width, "height": im.height, "persons": people}
            lines.append(json.dumps(doc, ensure_ascii=False))
            if overlay:  # the report shows the generated images
                skeletons[im.path] = {"w": im.width, "h": im.height, "persons": people}
        return summary

    for label, items in groups.items():
        found = persons.detect_poses(
            [it.path for it in items], pm, config.person_threshold, config.batch_size, progress=f"poses: {label}"
        )
        models[label]["pose"] = measure(label, found, ground_truth=False, overlay=True)
    if real_files is not None:
        if truth:
            found, source = persons.ground_truth_poses(real_files), "ground truth (metadata.jsonl)"
        else:
            found = persons.detect_poses(real_files, pm, config.person_threshold, config.batch_size, "poses: real")
            source = "detector"
        metrics["real"]["pose"] = {"source": source, **measure("real", found, ground_truth=truth, overlay=False)}
    (config.output / "pose.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return info


def _person_json(im: Any, p: int, verdict: Any) -> dict[str, Any]:
    """One person of pose.jsonl: box, detector probability, keypoints (x, y, confidence), score, failed checks."""
    score = None if verdict.score != verdict.score else round(verdict.score, 4)  # NaN -> None
    box_score = float(im.box_scores[p])
    return {
        "box": [round(float(x), 1) for x in im.boxes[p]],
        "box_score": None if box_score != box_score else round(box_score, 4),
        "keypoints": [[round(float(x), 1), round(float(y), 1), round(float(c), 3)] for x, y, c in im.keypoints[p]],
        "plausibility": score,
        "failed": verdict.failed,
    }


def print_result(result: EvaluateResult) -> None:
    """The metrics and ratings as rich tables on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    m = result.metrics
    if m.get("models"):
        rows = [(label, r, r.get("faces") or {}) for label, r in m["models"].items()]
        real = m.get("real") or {}
        rows.append(("real", {"n_generated": m.get("n_real", ""), "pose": real.get("pose")}, real.get("faces") or {}))
        columns = [  # (title, cell) — a column shows only when some model has a value
            ("images", lambda r, f: str(r.get("n_generated", ""))),
            ("FID", lambda r, f: _num(r.get("fid"))),
            (
                "95% interval",
                lambda r, f: _interval(r.get("fid_interval")),
            ),
            ("KID", lambda r, f: _num(r.get("kid"), 5)),
            ("face rate", lambda r, f: _pct(f.get("face_rate"))),
            ("face conf.", lambda r, f: _num(f.get("face_confidence"), 3)),
            ("face-crop FID", lambda r, f: _num(r.get("face_fid"))),
            ("CLIP score", lambda r, f: _num(r.get("clip_score"))),
            ("person rate", lambda r, f: _pct((r.get("pose") or {}).get("person_rate"))),
            ("keypoint conf.", lambda r, f: _num((r.get("pose") or {}).get("keypoint_confidence"), 3)),
            ("plausible poses [95%]", lambda r, f: _rate((r.get("pose") or {}), "plausible_rate")),
            ("plausibility", lambda r, f: _num((r.get("pose") or {}).get("plausibility"), 3)),
        ]
        shown = [(title, cell) for title, cell in columns if any(cell(r, f) for _, r, f in rows[:-1])]
        pose = m.get("pose_setup") or {}
        random = pose.get("weights") == "random"
        caption = "pose: RANDOM stand-in weights, the pose numbers mean nothing" if random else None
        t = Table(title=f"humanfix evaluate ({m.get('mode', 'no FID')})", caption=caption)
        t.add_column("model")
        for title, _ in shown:
            t.add_column(title, justify="right")
        for label, r, f in rows:
            t.add_row(label, *[cell(r, f) for _, cell in shown], style="dim" if label == "real" else None)
        console.print(t)
    elif m.get("saved_stats"):
        console.print(f"{m['n_real']} real images; features saved to {m['saved_stats']}")
    for note in m.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    if result.ratings:
        t = Table(title="blind A/B ratings")
        for col in ("A vs B", "A wins", "B wins", "ties", "A win rate", "95% Wilson", "p (binomial)"):
            t.add_column(col, justify="left" if col == "A vs B" else "right")
        for p in result.ratings:
            ci = "" if p["ci_low"] is None else f"[{p['ci_low']:.3f}, {p['ci_high']:.3f}]"
            t.add_row(
                f"{p['a']} vs {p['b']}", str(p["wins_a"]), str(p["wins_b"]), str(p["ties"]),
                _num(p["win_rate_a"], 3), ci, _num(p["p_value"], 4),
            )  # fmt: skip
        console.print(t)
    for path in (result.metrics_path, result.pose_path, result.ratings_path, result.report_path):
        if path is not None:
            console.print(f"wrote {path}", highlight=False)


def _num(x: float | None, digits: int = 2) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _interval(lo_hi: list[float] | None) -> str:
    return "" if not lo_hi else f"[{lo_hi[0]:.2f}, {lo_hi[1]:.2f}]"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def _rate(summary: dict[str, Any], key: str) -> str:
    """A rate with its interval and counts, e.g. ``62.5% [40.0, 85.0] (10/16)``."""
    x, iv = summary.get(key), summary.get(f"{key}_interval")
    if x is None:
        return "–" if summary else ""
    counts = f" ({summary['n_plausible']}/{summary['n_scored']})" if key == "plausible_rate" else ""
    return _pct(x) + ("" if not iv else f" [{100 * iv[0]:.1f}, {100 * iv[1]:.1f}]") + counts
