"""Fixtures for the fault and bad-input tests: a tiny training config, a finished run with checkpoints."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

write_prepared_split = sys.modules["tests.conftest"].write_prepared_split


def reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def make_config(data: Path, output: Path, **kw):
    """A tiny, fast training config: the LDM loss alone, 2-image batches, a checkpoint every 2 updates."""
    from humanfix.config import build_config
    from humanfix.train import TrainConfig

    values = dict(model="tiny", data=data, split="val", batch_size=2, seed=0, output=output, checkpoint_every=2,
                  max_steps=4, objective={"lambda_lpips": 0.0, "timestep_threshold": 1000})  # fmt: skip
    values.update(kw)
    return build_config(TrainConfig, None, **values)


@pytest.fixture
def train_config():
    """``train_config(data, output, **overrides)``: see :func:`make_config`."""
    return make_config


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, tiny_model) -> tuple[Path, Path]:
    """(prepared set, run folder) of a finished 4-step run with checkpoints at steps 2 and 4; copy before changing."""
    from humanfix.train import train

    root = tmp_path_factory.mktemp("finished")
    write_prepared_split(root / "data" / "val")
    reset_accelerate()
    try:
        train(make_config(root / "data", root / "run"))
    finally:
        reset_accelerate()
    return root / "data", root / "run"


@pytest.fixture
def run_copy(finished_run, tmp_path) -> tuple[Path, Path]:
    """A private copy of :func:`finished_run`'s output folder: (prepared set, run folder)."""
    data, run = finished_run
    mine = tmp_path / "run"
    shutil.copytree(run, mine)
    return data, mine
