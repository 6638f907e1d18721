"""Human-centric metrics FID misses: how often a face is found, how sure the detector is, face-crop FID, CLIP score.

- Face detection rate: the fraction of images where MTCNN (facenet-pytorch; its weights ship with the
  package, so this runs offline) finds at least one face with probability >= ``threshold``.
- Mean confidence: the mean, over the images that have such a face, of their most probable face's
  probability. (Images without a face are counted by the rate, not here.)
- Face-crop FID: every face >= ``threshold`` is cut out as a square around its box with ``margin`` of
  its size on each side (clipped to the image) and goes through the same Inception features as FID.
- CLIP score: 100 × max(cos(image, prompt), 0) averaged over images (torchmetrics' definition), only when
  the CLIP weights are on disk; otherwise it is skipped with a note saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from humanfix.errors import UserError
from humanfix.evaluate.sets import open_rgb

log = logging.getLogger(__name__)

DEFAULT_CLIP = "openai/clip-vit-large-patch14"  # CLIP ViT-L/14: SD 1.5's own text encoder family


@dataclass
class ImageFaces:
    """MTCNN's faces in one image: boxes (K×4, x0 y0 x1 y1 in pixels) and probabilities (K,), most probable first."""

    boxes: np.ndarray
    probs: np.ndarray

    def faces(self, threshold: float) -> np.ndarray:
        return self.boxes[self.probs >= threshold]


@dataclass
class FaceSummary:
    """Detection rate and mean confidence of one image set."""

    n_images: int
    n_with_face: int
    rate: float
    mean_confidence: float | None  # None when no image has a face
    n_faces: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "face_rate": self.rate,
            "face_confidence": self.mean_confidence,
            "n_with_face": self.n_with_face,
            "n_faces": self.n_faces,
            "n_images": self.n_images,
        }


MTCNN_MIN_SIDE = 12  # the smallest image MTCNN's 12×12 proposal network can look at


def load_detector(device: torch.device):
    """MTCNN returning every face (weights from the facenet-pytorch package, no download)."""
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device=device)


def detect_faces(files: Sequence[Path], detector, progress: str | None = None) -> list[ImageFaces]:
    """MTCNN on each image file (any size; RGB). One :class:`ImageFaces` per file, in order."""
    from humanfix.evaluate.fid import _progress

    out = []
    with _progress(progress, len(files)) as advance:
        for f in files:
            image = open_rgb(f)
            if min(image.size) < MTCNN_MIN_SIDE:  # MTCNN's first stage needs this much (it fails below)
                raise UserError(
                    f"{f} is {image.width}×{image.height} px: too small for face detection (at least "
                    f"{MTCNN_MIN_SIDE}×{MTCNN_MIN_SIDE})"
                )
            boxes, probs = detector.detect(image)
            if boxes is None:
                out.append(ImageFaces(np.zeros((0, 4)), np.zeros(0)))
            else:  # facenet-pytorch hands back object arrays under numpy 2
                b, p = np.array(boxes.tolist(), dtype=np.float64), np.array(probs.tolist(), dtype=np.float64)
                order = np.argsort(-p)
                out.append(ImageFaces(b[order], p[order]))
            advance(1)
    return out


def summarize(dets: Sequence[ImageFaces], threshold: float) -> FaceSummary:
    """Rate of images with a face >= ``threshold`` and the mean top probability among them."""
    tops = [float(d.probs[0]) for d in dets if len(d.probs) and d.probs[0] >= threshold]
    n = len(dets)
    return FaceSummary(
        n_images=n,
        n_with_face=len(tops),
        rate=len(tops) / n if n else 0.0,
        mean_confidence=float(np.mean(tops)) if tops else None,
        n_faces=sum(len(d.faces(threshold)) for d in dets),
    )


def square_box(box: Sequence[float], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """A square around ``box`` (x0 y0 x1 y1), ``margin`` of its longer side added on each side, clipped."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    right, bottom = int(round(cx + side / 2)), int(round(cy + side / 2))
    return max(left, 0), max(top, 0), min(right, width), min(bottom, height)


def face_crops(files: Sequence[Path], dets: Sequence[ImageFaces], threshold: float, margin: float) -> list[np.ndarray]:
    """Every face >= ``threshold`` as an H×W×3 uint8 crop (see :func:`square_box`)."""
    crops = []
    for f, d in zip(files, dets, strict=True):
        boxes = d.faces(threshold)
        if not len(boxes):
            continue
        im = open_rgb(f)
        for box in boxes:
            x0, y0, x1, y1 = square_box(box, margin, im.width, im.height)
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                crops.append(np.asarray(im.crop((x0, y0, x1, y1))))
    return crops


# -- CLIP score ------------------------------------------------------------------------------------------


@dataclass
class ClipScore:
    """Mean CLIP score over the images that have a prompt, or ``None`` with the reason in ``note``."""

    score: float | None
    n: int = 0
    note: str | None = None
    per_image: list[float] = field(default_factory=list)


def load_clip(name: str, device: torch.device) -> tuple[Any, Any] | str:
    """(model, processor) from a folder or the local Hugging Face cache, or a note saying why not."""
    from transformers import CLIPModel, CLIPProcessor

    if name.startswith((".", "/", "~")) and not Path(name).expanduser().is_dir():  # a folder, not a hub id
        return f"CLIP score skipped: CLIP folder {name} not found (pass --clip-model FOLDER or a cached hub id)."
    try:
        name = str(Path(name).expanduser()) if name.startswith("~") else name
        model = CLIPModel.from_pretrained(name, local_files_only=True).to(device).eval()
        processor = CLIPProcessor.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as e:
        where = "not in the local Hugging Face cache"
        if Path(name).is_dir():
            where = f"not loadable from {name} ({(str(e).strip().splitlines() or [type(e).__name__])[0][:160]})"
        return f"CLIP score skipped: CLIP weights {name!r} {where}. Put them there or pass --clip-model FOLDER."
    return model, processor


def clip_score(
    files: Sequence[Path], prompts: Sequence[str | None], clip: tuple[Any, Any], batch_size: int = 16
) -> ClipScore:
    """100 × max(cos(image embedding, prompt embedding), 0), averaged over the images with a prompt."""
    model, processor = clip
    pairs = [(f, p) for f, p in zip(files, prompts, strict=True) if p]
    if not pairs:
        return ClipScore(None, note="CLIP score skipped: no prompts (the folder has no index.jsonl)")
    device = next(model.parameters()).device
    scores: list[float] = []
    for s in range(0, len(pairs), batch_size):
        chunk = pairs[s : s + batch_size]
        inputs = processor(
            text=[p for _, p in chunk],
            images=[open_rgb(f) for f, _ in chunk],
            return_tensors="pt",
            padding=True,
            truncation=True,
        ).to(device)
        with torch.no_grad():
            img = model.get_image_features(pixel_values=inputs["pixel_values"])
            txt = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        img, txt = _embedding(img), _embedding(txt)
        cos = torch.nn.functional.cosine_similarity(img.float(), txt.float(), dim=-1)
        scores.extend((100 * cos.clamp(min=0)).tolist())
    return ClipScore(float(np.mean(scores)), n=len(scores), per_image=scores)


def _embedding(out: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor, or in newer transformers an output object holding it."""
    if isinstance(out, torch.Tensor):
        return out
    for key in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"unexpected CLIP feature output {type(out).__name__}")
