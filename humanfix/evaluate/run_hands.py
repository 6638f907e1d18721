"""``evaluate --hands``: hands per model and for the real set, FID-H/KID-H on hand crops, OUTPUT/hands.jsonl.

Called from :func:`humanfix.evaluate.run._measure`; the measures themselves are in :mod:`humanfix.evaluate.hands`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# FID-H / KID-H need at least this many hand crops on each side; below it the note says "too few" and no
# number is given (a Fréchet distance over a handful of crops is mostly the covariance's estimation noise).
MIN_HAND_CROPS = 10


def measure_hands(
    config: Any,
    groups: dict,
    real_files: list[Path] | None,
    models: dict[str, dict[str, Any]],
    metrics: dict[str, Any],
    notes: list[str],
    found_poses: dict[str, list],
    extractor: Any,
    overlay: dict[Path, dict[str, Any]] | None,
) -> dict[str, Any]:
    """Hand metrics into ``models[label]["hands"]`` and ``metrics["real"]["hands"]``; writes OUTPUT/hands.jsonl.

    ``found_poses``: the pose stage's persons per label (with --pose), for ``expected_hand_rate``;
    ``extractor``: the Inception features (with --fid/--kid), for FID-H and KID-H. Returns ``hands_setup``.
    """
    from humanfix.evaluate import fid as M
    from humanfix.evaluate import hands as H

    detector = H.load_detector(config.hand_threshold)
    info: dict[str, Any] = {
        **detector.describe(),
        "plausible_from": H.PLAUSIBLE,
        "bootstrap": {"resamples": config.hand_bootstrap, "seed": config.seed, "over": "images"},
        "per_image": "hands.jsonl",
        "min_crops": MIN_HAND_CROPS,
    }
    if found_poses:
        info["wrist_crop"] = {"forearms": H.WRIST_CROP, "min_px": H.MIN_WRIST_CROP, "upscaled_to": H.WRIST_UPSCALE}
    lines: list[str] = []
    crops: dict[str, list] = {}

    def measure(label: str, files: list[Path], show: bool) -> dict[str, Any]:
        found = H.detect_hands(files, detector, progress=f"hands: {label}")
        wrists = None
        if label in found_poses:
            wrists = H.expected_hands(found_poses[label], detector, config.keypoint_threshold)
        summary, verdicts = H.summarize(found, config.hand_bootstrap, config.seed, wrists)
        if summary["n_unreadable"]:
            notes.append(f"hands, {label}: {summary['n_unreadable']} of {summary['n_images']} image(s) unreadable")
        if summary["n_hands"] == 0:
            notes.append(
                f"hands, {label}: no hand found in {summary['n_images'] - summary['n_unreadable']} readable image(s) "
                f"(--hand-threshold {config.hand_threshold}): no plausibility"
            )
        for im, vs in zip(found, verdicts, strict=True):
            hands = [H.hand_json(h, v) for h, v in zip(im.hands, vs, strict=True)]
            doc = {"model": label, "file": str(im.path), "width": im.width, "height": im.height, "hands": hands}
            if not im.readable:
                doc["unreadable"] = True
            lines.append(json.dumps(doc, ensure_ascii=False))
            if show and overlay is not None and hands:
                slim = [{k: v for k, v in h.items() if k != "world"} for h in hands]
                overlay[im.path] = {"w": im.width, "h": im.height, "hands": slim}
        if extractor is not None:
            crops[label] = H.hand_crops(found)
        return summary

    for label, items in groups.items():
        models[label]["hands"] = measure(label, [it.path for it in items], show=True)
    if real_files is not None:
        metrics["real"]["hands"] = measure("real", real_files, show=False)
    (config.output / "hands.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    if extractor is not None and real_files is None:
        notes.append("FID-H skipped: it needs real images (--real), not saved statistics")
    elif extractor is not None:
        real_crops = crops["real"]
        metrics["real"]["n_hand_crops"] = len(real_crops)
        real_feats = M.array_features(real_crops, extractor, config.batch_size) if len(real_crops) else None
        for label in groups:
            gen_crops = crops[label]
            models[label]["n_hand_crops"] = len(gen_crops)
            if min(len(real_crops), len(gen_crops)) < MIN_HAND_CROPS:
                notes.append(
                    f"FID-H/KID-H of {label}: too few hand crops ({len(gen_crops)} generated, {len(real_crops)} real; "
                    f"needs {MIN_HAND_CROPS} on each side)"
                )
                continue
            gen_feats = M.array_features(gen_crops, extractor, config.batch_size)
            if config.fid:
                models[label]["hand_fid"] = M.frechet(M.Moments(real_feats), M.Moments(gen_feats))
                if config.bootstrap:
                    bs = M.bootstrap_fid(M.Moments(real_feats), gen_feats, config.bootstrap, config.seed)
                    models[label]["hand_fid_interval"] = [bs.low, bs.high]
            if config.kid:
                models[label]["hand_kid"] = M.kid_from_features(real_feats, gen_feats, config.seed)
    return info
