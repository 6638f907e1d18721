"""Fixtures for the evaluate tests: a random stand-in for clean-fid's Inception file and small image sets.

The stand-in has clean-fid's interface (``.layers(x)`` on N×3×299×299 in [-1, 1] -> N×2048×1×1, and
``forward(x, return_features=True)`` on [0, 255] images of any size -> N×2048), so every code path runs
without the real 95 MB download; its numbers mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

MALICIOUS = '<img src=x onerror="document.title=\'pwned\'"></script><script>alert(1)</script> & @@DATA@@ "quoted"'


class _Layers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 7, stride=4), nn.ReLU(), nn.Conv2d(16, 64, 5, stride=4), nn.ReLU(),
            nn.Conv2d(64, 2048, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _FakeInception(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = _Layers()

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.layers((x - 128) / 128).view(x.shape[0], 2048)


@pytest.fixture
def malicious() -> str:
    """A prompt that would run script, break attributes or expand a template placeholder if left unescaped."""
    return MALICIOUS


@pytest.fixture(scope="session")
def fake_inception(tmp_path_factory) -> Path:
    """A TorchScript file named like clean-fid's, with random (seeded) weights."""
    torch.manual_seed(1234)
    path = tmp_path_factory.mktemp("inception") / "inception-2015-12-05.pt"
    torch.jit.script(_FakeInception().eval()).save(str(path))
    return path


def _noise(rng: np.random.Generator, size: int, mean: float = 128, std: float = 40) -> Image.Image:
    return Image.fromarray(rng.normal(mean, std, (size, size, 3)).clip(0, 255).astype(np.uint8))


@pytest.fixture
def noise_folder():
    """``make(folder, n, seed, mean, size)``: a folder of n noise PNGs."""

    def make(folder: Path, n: int = 8, seed: int = 0, mean: float = 128, size: int = 64) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        for i in range(n):
            _noise(rng, size, mean).save(folder / f"{i:03d}.png")
        return folder

    return make


@pytest.fixture
def compare_output():
    """``make(folder, prompts, seeds, labels, photos=None)``: a folder laid out like ``generate --compare``.

    One subfolder per label, ``index.jsonl`` with generate's record keys, and a ``grids/`` PNG that must
    never be counted. Label ``photos`` (when given a list of photo files) uses half-size copies of them
    (people with faces); other labels draw noise.
    """

    def make(folder: Path, prompts: list[str], seeds: list[int], labels: list[str], photos=None) -> Path:
        rng = np.random.default_rng(7)
        records = []
        k = 0
        for label in labels:
            (folder / label).mkdir(parents=True, exist_ok=True)
            for p, prompt in enumerate(prompts):
                for i, seed in enumerate(seeds):
                    name = f"{label}/{p:05d}_{i:02d}_seed{seed}.png"
                    if label == "photos" and photos:
                        with Image.open(photos[k % len(photos)]) as im:
                            im.convert("RGB").resize((im.width // 2, im.height // 2)).save(folder / name)
                        k += 1
                    else:
                        _noise(rng, 64, mean=100 + 20 * labels.index(label)).save(folder / name)
                    records.append(
                        {
                            "file": name,
                            "prompt": prompt,
                            "negative_prompt": "",
                            "seed": seed,
                            "model": "tiny",
                            "branch": None,
                            "label": label,
                            "steps": 2,
                            "guidance_scale": 7.5,
                            "scheduler": "ddim",
                            "height": 64,
                            "width": 64,
                            "conditioning": None,
                            "conditioning_scale": None,
                            "condition_image": None,
                        }  # fmt: skip
                    )
        (folder / "grids").mkdir(exist_ok=True)
        _noise(rng, 96).save(folder / "grids" / "00000.png")
        (folder / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        return folder

    return make
