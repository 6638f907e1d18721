"""FID and KID through clean-fid, with a bootstrap interval and saved reference statistics.

Features are clean-fid's: its ``ResizeDataset`` (``clean`` mode: PIL bicubic to 299×299 in float;
``legacy_tensorflow``: resized inside the network) feeding its ``InceptionV3W`` TorchScript wrapper
(``inception-2015-12-05.pt``), so a feature row equals clean-fid's for the same file.

The Fréchet distance between the two feature sets, with A (n_r×d) and B (n_g×d) the centred features
over sqrt(n-1) (so Σ_r = AᵀA, Σ_g = BᵀB),

    FID = |μ_r - μ_g|² + tr Σ_r + tr Σ_g - 2 tr (Σ_r Σ_g)^½,   tr (Σ_r Σ_g)^½ = ‖A Bᵀ‖_*  (nuclear norm)

is the quantity clean-fid's ``frechet_distance`` computes; it takes ``scipy.linalg.sqrtm`` of the 2048×2048
product (tens of seconds on a CPU, complex round-off), whereas the singular values of a factor product
(at most min(n, d) square, never complex) cost well under a second at a few hundred images. The two
agree to ~1e-7 relative (tests/evaluate/test_fid.py), which makes a bootstrap over the generated set
affordable: features are computed once and resampled.

Bootstrap interval: the generated features are resampled with replacement ``n`` times. A resample
holds ~63% distinct images, which raises FID's small-sample bias, so the raw replicate distribution
sits above the estimate; the interval is the 2.5–97.5 percentile range of the replicates shifted by
that bootstrap bias (mean replicate − estimate), i.e. the spread of FID over choices of generated
images, centred on the estimate. It ignores the real set's own sampling noise and says nothing about
FID's bias at this N: compare models only at equal N.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from humanfix.config import humanfix_home
from humanfix.errors import UserError
from humanfix.models.weights import INCEPTION_FID

log = logging.getLogger(__name__)

MODES = ("clean", "legacy_tensorflow")
FEATURE_DIM = 2048
FEW_IMAGES = 10_000  # below this, FID's bias and variance are large: warn
STATS_DIR = "fid-stats"  # under $HUMANFIX_HOME
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


# -- the feature extractor ---------------------------------------------------------------------------


def _inception_class():
    from cleanfid.inception_torchscript import InceptionV3W

    class InceptionFile(InceptionV3W):
        """clean-fid's ``InceptionV3W`` loaded from a file path (any name) instead of a folder; same forward."""

        def __init__(self, path: Path, resize_inside: bool) -> None:
            torch.nn.Module.__init__(self)
            with warnings.catch_warnings():  # torch.jit.load's deprecation notice: clean-fid's file is TorchScript
                warnings.simplefilter("ignore", FutureWarning)
                self.base = torch.jit.load(str(path), map_location="cpu").eval()
            self.layers = self.base.layers
            self.resize_inside = resize_inside

    return InceptionFile


@dataclass
class Extractor:
    """The Inception network clean-fid uses, where it came from, and the mode it resizes for."""

    model: torch.nn.Module
    path: Path
    sha256: str
    mode: str
    device: torch.device

    def describe(self) -> dict[str, Any]:
        return {
            "name": "clean-fid InceptionV3W (inception-2015-12-05, TorchScript)",
            "file": str(self.path),
            "sha256": self.sha256,
        }


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_inception(weights: str | Path | None, mode: str, device: torch.device) -> Extractor:
    """clean-fid's Inception from ``weights`` (or where clean-fid keeps it); a clear error when missing."""
    if mode not in MODES:
        raise UserError(f"unknown FID mode {mode!r}: use one of {', '.join(MODES)}")
    path = INCEPTION_FID.require(weights)
    try:
        model = _inception_class()(path, resize_inside=mode == "legacy_tensorflow")
    except Exception as e:  # torch.jit.load raises RuntimeError/ValueError on anything not TorchScript
        raise UserError(f"{path} is not clean-fid's TorchScript Inception file: {str(e).splitlines()[0]}") from None
    if not hasattr(model.base, "layers"):
        raise UserError(f"{path} is TorchScript but has no .layers: not clean-fid's Inception file")
    return Extractor(model.to(device).eval(), path, file_sha256(path), mode, device)


# -- features -----------------------------------------------------------------------------------------


class _Files(torch.utils.data.Dataset):
    """clean-fid's ``ResizeDataset`` that reports an unreadable file instead of failing inside a worker."""

    def __init__(self, files: Sequence[Path], mode: str) -> None:
        from cleanfid.utils import ResizeDataset

        self.inner = ResizeDataset([str(f) for f in files], mode=mode)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return i, self.inner[i], None
        except Exception as e:  # PIL's UnidentifiedImageError, OSError on truncated data, ...
            return i, None, f"{type(e).__name__}: {e}"


def _keep(batch: list) -> list:
    return batch


def image_features(
    files: Sequence[Path],
    extractor: Extractor,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: str | None = None,
) -> np.ndarray:
    """Inception features of image files, N×2048 float32, row i for ``files[i]`` (clean-fid's numbers)."""
    if not files:
        raise UserError("no images to compute features of")
    loader = torch.utils.data.DataLoader(
        _Files(files, extractor.mode), batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_keep
    )
    out = []
    with _progress(progress, len(files)) as advance:
        for batch in loader:
            for i, _, err in batch:
                if err is not None:
                    raise UserError(f"cannot read image {files[i]}: {err}")
            try:
                x = torch.stack([t for _, t, _ in batch])
            except RuntimeError:
                raise UserError(
                    f"{extractor.mode} mode feeds images at their own size, so they must all have one size"
                ) from None
            out.append(_forward(extractor, x))
            advance(len(batch))
    return np.concatenate(out)


def array_features(images: Sequence[np.ndarray], extractor: Extractor, batch_size: int = 32) -> np.ndarray:
    """Features of in-memory images (H×W×3 uint8 in [0, 255]), resized as clean-fid resizes files. N×2048."""
    import torchvision
    from cleanfid.resize import build_resizer

    resize, to_tensor = build_resizer(extractor.mode), torchvision.transforms.ToTensor()
    if extractor.mode == "legacy_tensorflow":  # the network resizes: images of different sizes go one by one
        batch_size = 1

    def prep(img: np.ndarray) -> torch.Tensor:  # the body of clean-fid's ResizeDataset.__getitem__
        r = resize(img)
        return to_tensor(np.array(r)) * 255 if r.dtype == np.uint8 else to_tensor(r)

    out = [
        _forward(extractor, torch.stack([prep(im) for im in images[s : s + batch_size]]))
        for s in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM), np.float32)


def _forward(extractor: Extractor, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return extractor.model(x.to(extractor.device)).detach().cpu().numpy()


class _progress:
    """A rich progress bar on stderr when ``label`` is set; yields ``advance(n)``."""

    def __init__(self, label: str | None, total: int) -> None:
        self.label, self.total, self.bar = label, total, None

    def __enter__(self):
        if self.label is None:
            return lambda n: None
        from rich.console import Console
        from rich.progress import Progress

        console = Console(stderr=True)
        self.bar = Progress(console=console, transient=True, disable=not console.is_terminal)
        self.bar.__enter__()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


# -- the Fréchet distance -------------------------------------------------------------------------------


class Moments:
    """Mean, trace of the covariance and a square-root factor F (FᵀF = Σ) of a feature set (N×d)."""

    def __init__(self, feats: np.ndarray) -> None:
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise UserError(f"FID needs at least 2 images per set, got {len(x)}")
        self.n = len(x)
        self.mu = x.mean(axis=0)
        xc = (x - self.mu) / np.sqrt(self.n - 1)
        self.trace = float(np.einsum("ij,ij->", xc, xc))
        if self.n <= x.shape[1]:
            self.factor = xc  # n×d
        else:  # d×d from the eigen-decomposition of Σ = xcᵀxc
            w, v = np.linalg.eigh(xc.T @ xc)
            self.factor = np.sqrt(np.clip(w, 0, None))[:, None] * v.T


def frechet(a: Moments, b: Moments) -> float:
    """FID between two feature sets' moments (see the module docstring); ≥ 0 up to round-off."""
    diff = a.mu - b.mu
    nuclear = np.linalg.svd(a.factor @ b.factor.T, compute_uv=False).sum()
    return float(diff @ diff + a.trace + b.trace - 2 * nuclear)


def fid_from_features(real: np.ndarray, generated: np.ndarray) -> float:
    return frechet(Moments(real), Moments(generated))


@dataclass
class Bootstrap:
    """A bootstrap over the generated set: the 95% interval (bias-shifted percentiles) and the replicates."""

    low: float
    high: float
    bias: float  # mean replicate − estimate (resamples repeat images, which raises FID)
    replicates: list[float]


def bootstrap_fid(real: Moments, generated: np.ndarray, n: int, seed: int = 0) -> Bootstrap:
    """Resample the generated features (N×2048) with replacement ``n`` times; features are not recomputed."""
    if n < 2:
        raise UserError(f"--bootstrap needs at least 2 resamples, got {n}")
    estimate = frechet(real, Moments(generated))
    rng = np.random.default_rng(seed)
    n_gen = len(generated)
    reps = np.array([frechet(real, Moments(generated[rng.integers(0, n_gen, n_gen)])) for _ in range(n)])
    bias = float(reps.mean() - estimate)
    low, high = np.percentile(reps, [2.5, 97.5]) - bias
    return Bootstrap(float(low), float(high), bias, [float(r) for r in reps])


def kid_from_features(real: np.ndarray, generated: np.ndarray, seed: int = 0) -> float:
    """clean-fid's ``kernel_distance`` (100 subsets of up to 1000), with its numpy draws seeded."""
    from cleanfid.fid import kernel_distance

    if min(len(real), len(generated)) < 2:
        raise UserError("KID needs at least 2 images per set")
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return float(kernel_distance(np.asarray(real), np.asarray(generated)))
    finally:
        np.random.set_state(state)


# -- saved reference statistics ---------------------------------------------------------------------


def stats_path(name: str, mode: str) -> Path:
    """``$HUMANFIX_HOME/fid-stats/NAME_MODE.npz``."""
    if not _NAME.match(name):
        raise UserError(f"bad statistics name {name!r}: use letters, digits, '_', '-', '.' (at most 100)")
    return humanfix_home() / STATS_DIR / f"{name}_{mode}.npz"


def save_stats(name: str, feats: np.ndarray, extractor: Extractor, source: str) -> Path:
    """Keep a real set's features (N×2048 float32; KID needs them, not only μ and Σ) for ``--real-stats``."""
    path = stats_path(name, extractor.mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        feats=np.asarray(feats, np.float32),
        mode=extractor.mode,
        extractor_sha256=extractor.sha256,
        source=source,
    )
    tmp.replace(path)
    return path


def load_stats(name: str, extractor: Extractor) -> tuple[np.ndarray, str]:
    """The features saved as ``name`` and their source folder; they must come from this extractor and mode."""
    path = stats_path(name, extractor.mode)
    if not path.is_file():
        folder = path.parent
        have = sorted(p.name for p in folder.glob("*.npz")) if folder.is_dir() else []
        raise UserError(
            f"no saved statistics {name!r} for mode {extractor.mode} ({path} not found); "
            + (f"saved: {', '.join(have)}" if have else "save some with --real DIR --save-stats NAME")
        )
    with np.load(path) as z:
        feats, sha, source = z["feats"], str(z["extractor_sha256"]), str(z["source"])
    if sha != extractor.sha256:
        raise UserError(
            f"statistics {name!r} were computed with another Inception file (sha256 {sha[:12]}…, now "
            f"{extractor.sha256[:12]}…): recompute them with --real DIR --save-stats {name}"
        )
    return feats, source
