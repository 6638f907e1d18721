"""Shared fixtures: an isolated HUMANFIX_HOME, the tiny model, the OCHuman sample (skipped when absent)."""

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

REPO = Path(__file__).resolve().parents[1]
OCHUMAN = REPO.parent / "shared" / "data" / "ochuman-sample"


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The built-in tiny SD pipeline folder (written once per test session)."""
    from humanfix.models.tiny import ensure_tiny_model

    return ensure_tiny_model()


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
