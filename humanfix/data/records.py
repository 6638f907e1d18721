"""The ``metadata.jsonl`` record: the one definition that prepare-data writes and every reader reads.

A prepared split folder looks like::

    OUT/{split}/metadata.jsonl          one Record per line, sorted by coco_id
    OUT/{split}/images/<coco_id>.jpg    RGB, width × height (resolution², or its bucket with --buckets)
    OUT/{split}/masks/<coco_id>.png     union person mask, mode L, 0 or 255, same size as the image
    OUT/{split}/crops/faces/<coco_id>_<k>.png    face box k, squared, 160×160 (optional)
    OUT/{split}/crops/persons/<coco_id>_<k>.png  person box k, as boxed (optional)
    OUT/{split}/crops/hands/<coco_id>_<k>.png    hand box k, squared, 64×64 (optional)

Boxes are ``[x0, y0, x1, y1]`` integers in output pixels with x1, y1 exclusive. Keypoints are the 17
COCO keypoints per person as ``[x, y, v]`` in output pixels (floats; ``v`` 0 = not labelled,
1 = labelled but hidden, 2 = visible; a labelled point may lie outside the crop). Hands are parallel lists
like faces (up to two per person); records written before hands existed load with none.

Public API: :class:`Record`, :func:`read_records`, :func:`write_records`, :func:`write_atomic`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from humanfix.errors import UserError

METADATA = "metadata.jsonl"
FACE_SOURCES = ("keypoints", "mtcnn", "both")
HAND_SOURCES = ("keypoints", "wholebody")
HAND_SIDES = ("left", "right")
NUM_KEYPOINTS = 17


@dataclass(frozen=True)
class Record:
    """One prepared image. Paths are relative to the split folder, with forward slashes."""

    file_name: str  # "images/<coco_id>.jpg"
    mask_file_name: str  # "masks/<coco_id>.png"
    text: list[str]  # every caption of the image (at least one)
    person_boxes: list[list[int]]  # P × [x0, y0, x1, y1], output pixels, x1/y1 exclusive
    face_boxes: list[list[int]]  # F × [x0, y0, x1, y1], at most one face per person
    face_sources: list[str]  # F × "keypoints" | "mtcnn" | "both"
    keypoints: list[list[list[float]]]  # P × 17 × [x, y, v], same order as person_boxes
    coverage: float  # fraction of the ORIGINAL image covered by the union of non-crowd person masks
    coco_id: int
    width: int  # output image width in pixels
    height: int  # output image height in pixels
    face_crop_files: list[str] = field(default_factory=list)  # F paths (empty when crops are off)
    person_crop_files: list[str] = field(default_factory=list)  # P paths (empty when crops are off)
    # The output's window in the ORIGINAL image's pixels, [x0, y0, x1, y1] floats (x1, y1 exclusive): what
    # was resized to width × height. None for sets prepared before it was recorded.
    window: list[float] | None = None
    hand_boxes: list[list[int]] = field(default_factory=list)  # H × [x0, y0, x1, y1], at most two per person
    hand_sides: list[str] = field(default_factory=list)  # H × "left" | "right" (the person's own side)
    hand_sources: list[str] = field(default_factory=list)  # H × "keypoints" | "wholebody"
    hand_crop_files: list[str] = field(default_factory=list)  # H paths (empty when crops are off)

    def __post_init__(self) -> None:
        wrong_types = _type_problems(self)
        if wrong_types:  # the value checks below assume the types
            raise ValueError(f"record {self.coco_id!r}: " + "; ".join(wrong_types))
        problems = []
        if not isinstance(self.text, list) or not self.text or not all(isinstance(t, str) for t in self.text):
            problems.append("text must be a non-empty list of strings")
        for name in ("person_boxes", "face_boxes", "hand_boxes"):
            boxes = getattr(self, name)
            if not all(len(b) == 4 and b[0] < b[2] and b[1] < b[3] for b in boxes):
                problems.append(f"{name} must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1")
            elif not all(0 <= b[0] and 0 <= b[1] and b[2] <= self.width and b[3] <= self.height for b in boxes):
                problems.append(f"{name} must lie inside the {self.width}×{self.height} image")
        if len(self.face_sources) != len(self.face_boxes) or not set(self.face_sources) <= set(FACE_SOURCES):
            problems.append(f"face_sources must give one of {FACE_SOURCES} per face box")
        if len(self.hand_sources) != len(self.hand_boxes) or not set(self.hand_sources) <= set(HAND_SOURCES):
            problems.append(f"hand_sources must give one of {HAND_SOURCES} per hand box")
        if len(self.hand_sides) != len(self.hand_boxes) or not set(self.hand_sides) <= set(HAND_SIDES):
            problems.append(f"hand_sides must give one of {HAND_SIDES} per hand box")
        if self.hand_crop_files and len(self.hand_crop_files) != len(self.hand_boxes):
            problems.append("hand_crop_files must list one file per hand box")
        if len(self.keypoints) != len(self.person_boxes) or any(
            len(k) != NUM_KEYPOINTS or any(len(p) != 3 for p in k) for k in self.keypoints
        ):
            problems.append("keypoints must hold 17 [x, y, v] per person box")
        if self.face_crop_files and len(self.face_crop_files) != len(self.face_boxes):
            problems.append("face_crop_files must list one file per face box")
        if self.person_crop_files and len(self.person_crop_files) != len(self.person_boxes):
            problems.append("person_crop_files must list one file per person box")
        if self.window is not None and not (len(self.window) == 4 and self.window[0] < self.window[2]
                                            and self.window[1] < self.window[3]):  # fmt: skip
            problems.append("window must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1")
        if not 0.0 <= self.coverage <= 1.0:
            problems.append("coverage must lie in [0, 1]")
        for p in self.paths():
            if not _inside(p):
                problems.append(f"path {p!r} leaves the split folder")
        if problems:
            raise ValueError(f"record {self.coco_id}: " + "; ".join(problems))

    def paths(self) -> list[str]:
        """Every file the record names, relative to the split folder."""
        return [
            self.file_name, self.mask_file_name, *self.face_crop_files, *self.person_crop_files, *self.hand_crop_files
        ]  # fmt: skip

    def to_json(self) -> str:
        """One line of JSON (no newline), keys in a fixed order, so equal records give equal bytes."""
        return json.dumps(
            {
                "file_name": self.file_name,
                "mask_file_name": self.mask_file_name,
                "text": self.text,
                "person_boxes": self.person_boxes,
                "face_boxes": self.face_boxes,
                "face_sources": self.face_sources,
                "keypoints": self.keypoints,
                "coverage": self.coverage,
                "coco_id": self.coco_id,
                "width": self.width,
                "height": self.height,
                "face_crop_files": self.face_crop_files,
                "person_crop_files": self.person_crop_files,
                "hand_boxes": self.hand_boxes,
                "hand_sides": self.hand_sides,
                "hand_sources": self.hand_sources,
                "hand_crop_files": self.hand_crop_files,
                **({"window": self.window} if self.window is not None else {}),
            },
            ensure_ascii=False,
            separators=(", ", ": "),
        )

    @classmethod
    def from_json(cls, line: str) -> Record:
        """Parse one line; raises ``ValueError`` on malformed JSON, missing keys or a path leaving the folder."""
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"not JSON: {e}") from None
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        required = [
            "file_name", "mask_file_name", "text", "person_boxes", "face_boxes", "face_sources",
            "keypoints", "coverage", "coco_id", "width", "height",
        ]  # fmt: skip
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"missing keys {missing}")
        optional = (
            "face_crop_files", "person_crop_files", "hand_boxes", "hand_sides", "hand_sources", "hand_crop_files",
            "window",
        )  # fmt: skip
        return cls(**{k: d[k] for k in required}, **{k: d[k] for k in optional if k in d})


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _type_problems(r: Record) -> list[str]:
    """What has the wrong JSON type (a string where a number belongs, null keypoints …), for one clear line."""
    problems = []
    for name in ("coco_id", "width", "height"):
        value = getattr(r, name)
        if not isinstance(value, int) or isinstance(value, bool) or (name != "coco_id" and value <= 0):
            problems.append(f"{name} must be a{' positive' if name != 'coco_id' else 'n'} integer, got {value!r}")
    if not _number(r.coverage):
        problems.append(f"coverage must be a number, got {r.coverage!r}")
    for name in ("file_name", "mask_file_name"):
        if not isinstance(getattr(r, name), str):
            problems.append(f"{name} must be a string, got {getattr(r, name)!r}")
    for name in ("face_sources", "face_crop_files", "person_crop_files"):
        value = getattr(r, name)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(f"{name} must be a list of strings, got {value!r}")
    for name in ("person_boxes", "face_boxes"):
        boxes = getattr(r, name)
        if not isinstance(boxes, list) or not all(isinstance(b, list) and all(map(_number, b)) for b in boxes):
            problems.append(f"{name} must be a list of [x0, y0, x1, y1] numbers, got {boxes!r}"[:160])
    kps = r.keypoints
    if not isinstance(kps, list) or not all(
        isinstance(k, list) and all(isinstance(p, list) and all(map(_number, p)) for p in k) for k in kps
    ):
        problems.append(f"keypoints must be a list of 17 [x, y, v] numbers per person, got {kps!r}"[:160])
    return problems


def _inside(path: str) -> bool:
    """Whether a relative POSIX path stays inside its folder (no absolute path, no ``..``, no backslash)."""
    p = PurePosixPath(path)
    return bool(path) and "\\" not in path and not p.is_absolute() and ".." not in p.parts and ":" not in path


def read_records(split_dir: str | Path) -> list[Record]:
    """Every record of ``split_dir/metadata.jsonl``, in file order.

    Raises :class:`UserError` (naming file and line) when the file is missing, a line is malformed, or a
    record names a path outside ``split_dir`` (also through a symlink).
    """
    split_dir = Path(split_dir)
    meta = split_dir / METADATA
    if not meta.is_file():
        raise UserError(f"no {METADATA} in {split_dir}: run `humanfix prepare-data` first")
    root = split_dir.resolve()
    records = []
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = Record.from_json(line)
        except (ValueError, TypeError) as e:
            raise UserError(f"{meta}:{n}: bad record: {e}") from None
        for p in rec.paths():
            if not (split_dir / p).resolve().is_relative_to(root):
                raise UserError(f"{meta}:{n}: path {p!r} leaves the split folder {split_dir}")
        records.append(rec)
    return records


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A crash leaves either the old file or the new one, never a half-written one; the temporary file
    is named ``.<name>.<random>.tmp``, which no reader takes for an image or a metadata file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_records(split_dir: str | Path, records: list[Record]) -> Path:
    """Write ``split_dir/metadata.jsonl`` atomically, sorted by ``coco_id``; returns its path."""
    ordered = sorted(records, key=lambda r: r.coco_id)
    data = "".join(r.to_json() + "\n" for r in ordered).encode("utf-8")
    path = Path(split_dir) / METADATA
    write_atomic(path, data)
    return path
