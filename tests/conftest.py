"""Shared fixtures: an isolated HUMANFIX_HOME, the tiny model, the OCHuman sample (skipped when absent).

Devices: the suite means the CPU, on every machine. Each test that is not marked ``gpu`` sees no CUDA
(``torch.cuda.is_available()`` is False in-process; subprocesses get ``CUDA_VISIBLE_DEVICES=""`` and
accelerate's ``ACCELERATE_USE_CPU``), so it computes and asserts the same on a GPU machine as here.
Tests marked ``gpu`` (tests/gpu/) see the GPU, and skip where there is none.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Every test run gets its own HUMANFIX_HOME before humanfix is imported anywhere, so the tiny model and
# caches never touch the user's real ~/.cache/humanfix. Subprocesses inherit it.
os.environ.setdefault("HUMANFIX_HOME", tempfile.mkdtemp(prefix="humanfix-test-home-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# cuBLAS must see this before its first use for `train --deterministic` to be bit-exact (tests/gpu/).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

REPO = Path(__file__).resolve().parents[1]
OCHUMAN = REPO.parent / "shared" / "data" / "ochuman-sample"


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (the gpu set)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def cpu_unless_gpu(request, monkeypatch):
    """Hide CUDA from every test not marked ``gpu`` (see the module docstring)."""
    if request.node.get_closest_marker("gpu"):
        yield
        return
    import torch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    yield


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The built-in tiny SD pipeline folder (written once per test session)."""
    from humanfix.models.tiny import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture
def run_offline(tmp_path):
    """``run(models, code) -> stdout``: lay out ``{repo_id: folder}`` as a Hugging Face cache, then run
    ``code`` in a fresh Python with the hub offline and only that cache, as a user's cached checkpoints load."""
    import shutil
    import subprocess
    import sys

    def run(models: dict[str, Path], code: str) -> str:
        commit = "0123456789abcdef0123456789abcdef01234567"
        for repo_id, folder in models.items():
            repo = tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}"
            (repo / "refs").mkdir(parents=True)
            (repo / "refs" / "main").write_text(commit)
            shutil.copytree(folder, repo / "snapshots" / commit)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-1500:]
        return r.stdout

    return run


@pytest.fixture(scope="session")
def ochuman() -> Path:
    """``../shared/data/ochuman-sample``: 3 real photos, COCO RLE masks, keypoints, captions."""
    if not (OCHUMAN / "person_keypoints.json").is_file():
        pytest.skip(f"OCHuman sample not found at {OCHUMAN}")
    return OCHUMAN


@pytest.fixture
def humanfix_cli():
    """Run the CLI in-process: ``run(args) -> (exit_code, stdout, stderr)`` with main()'s error handling."""
    import contextlib
    import io
    import sys

    from humanfix import cli

    def run(args: list[str]) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        old = sys.argv
        sys.argv = ["humanfix", *map(str, args)]
        code = 0
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                cli.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv = old
        return code, out.getvalue(), err.getvalue()

    return run


@pytest.fixture
def tiny_components(tiny_model):
    """Fresh SD components of the tiny model (fresh per test: tests may change requires_grad)."""
    from humanfix.models.pipeline import load_components

    return load_components(str(tiny_model))


def write_prepared_split(split_dir: Path, n: int = 3, size: int = 64, seed: int = 0) -> Path:
    """A tiny prepared split in the prepare-data layout: n random images with one person, one face and two hands."""
    import numpy as np
    from PIL import Image

    from humanfix.data.records import Record, write_records

    rng = np.random.default_rng(seed)
    (split_dir / "images").mkdir(parents=True, exist_ok=True)
    (split_dir / "masks").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        cid = 100 + i
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(split_dir / f"images/{cid}.jpg")
        mask = np.zeros((size, size), np.uint8)
        p = [size // 4, size // 8, 3 * size // 4, size]
        mask[p[1] : p[3], p[0] : p[2]] = 255
        Image.fromarray(mask).save(split_dir / f"masks/{cid}.png")
        face = [3 * size // 8, size // 8, 5 * size // 8, 3 * size // 8]
        kp = [[float(p[0] + (p[2] - p[0]) * (k % 3) / 2), float(p[1] + (p[3] - p[1]) * k / 17), 2.0] for k in range(17)]
        records.append(
            Record(
                file_name=f"images/{cid}.jpg",
                mask_file_name=f"masks/{cid}.png",
                text=[f"a person number {i}", "someone standing"],
                person_boxes=[p],
                face_boxes=[face],
                face_sources=["keypoints"],
                keypoints=[kp],
                hand_boxes=[
                    [p[0], 9 * size // 16, p[0] + size // 4, 13 * size // 16],
                    [p[2] - size // 4, 9 * size // 16, p[2], 13 * size // 16],
                ],
                hand_sides=["left", "right"],
                hand_sources=["keypoints", "wholebody"],
                coverage=0.375,
                coco_id=cid,
                width=size,
                height=size,
            )
        )
    write_records(split_dir, records)
    return split_dir


@pytest.fixture
def wrap_loss(monkeypatch):
    """``wrap_loss(change)``: training's ``compute_loss`` calls ``change(n, run, out)`` on its n-th output (from 1),
    which may alter it (poison it with a NaN, say) or just look at it."""
    import humanfix.train as train_module

    real = train_module.compute_loss

    def install(change) -> None:
        calls = []

        def wrapped(run, batch, g):
            out = real(run, batch, g)
            calls.append(None)
            change(len(calls), run, out)
            return out

        monkeypatch.setattr(train_module, "compute_loss", wrapped)

    return install


@pytest.fixture
def free_port() -> int:
    """A TCP port nobody listens on now, for torchrun's rendezvous (tests may run beside other runs)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def write_split():
    """``write_split(split_dir, n=3, size=64, seed=0)``: :func:`write_prepared_split` for tests in other folders."""
    return write_prepared_split


@pytest.fixture
def prepared_set(tmp_path) -> Path:
    """A prepare-data output folder with a 3-image ``val`` split at 64×64."""
    write_prepared_split(tmp_path / "data" / "val")
    return tmp_path / "data"


def reset_accelerate() -> None:
    """accelerate keeps process-wide singletons; in-process runs (train, generate) must each start clean."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Resets accelerate after every test; tests that run twice in one test call the returned function between."""
    yield reset_accelerate
    reset_accelerate()


def write_lora(folder: Path, unet, rank: int = 4, alpha: float = 8.0, targets: str = "attn-ff-conv") -> Path:
    """A LoRA on ``unet`` (modified in place) saved as training saves it: both files and humanfix.json.

    Its B matrices are drawn at random (training starts them at zero) so that it changes the images.
    """
    import torch

    from humanfix.models.lora import add_lora, kohya_metadata, save_diffusers_lora, write_kohya_lora
    from humanfix.models.pipeline import write_branch_meta

    torch.manual_seed(1)
    add_lora(unet, rank, alpha, targets)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    save_diffusers_lora(unet, folder)
    write_kohya_lora(folder, alpha, kohya_metadata(rank, alpha, 0, [64, 64], 'model = "tiny"\n'))
    write_branch_meta(folder, adapter="lora", base_model="tiny", rank=rank, alpha=alpha, targets=targets)
    return folder


@pytest.fixture(scope="session")
def tiny_lora(tiny_model, tmp_path_factory) -> Path:
    """``RUN/lora`` for the tiny UNet: rank 4, alpha 8 (≠ rank), attention, feed-forward and conv targets."""
    from humanfix.models.pipeline import load_components

    return write_lora(tmp_path_factory.mktemp("loras") / "lora-run" / "lora", load_components(str(tiny_model)).unet)
