"""Blind A/B judgements: read the choices files the report page downloads, and test them per model pair.

A choices file (written by the page in report.html) is JSON::

    {"format": "humanfix-ab-choices", "version": 1, "report_id": "...", "created": "...",
     "choices": [{"pair": 0, "prompt": "...", "seed": 3, "left": "base", "right": "ours",
                  "choice": "left" | "right" | "tie", "time": "..."}, ...]}

For each unordered pair of models (A, B; A sorts first) over all files:

- ``wins_a``, ``wins_b``, ``ties`` and ``n`` (all judgements).
- ``win_rate_a`` = wins_a / (wins_a + wins_b): ties are left out, as in a sign test. Its 95% interval is
  the Wilson score interval over the decisive judgements, and ``p_value`` the two-sided exact binomial
  test of win_rate_a = 0.5 (scipy's ``binomtest``), also over the decisive judgements only.
- ``score_a`` = (wins_a + ties / 2) / n: ties count half a win to each side, for a single summary number.

So ties never push a result towards significance; many ties shrink the evidence (fewer decisive
judgements) and show up in ``tie_rate``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from humanfix.errors import UserError

log = logging.getLogger(__name__)

FORMAT = "humanfix-ab-choices"
CHOICES = ("left", "right", "tie")


@dataclass(frozen=True)
class Judgement:
    """One blind choice between two models' images of the same prompt and seed."""

    left: str
    right: str
    choice: str  # "left", "right" or "tie"
    prompt: str | None = None
    seed: int | None = None


@dataclass
class PairResult:
    """Win statistics of model ``a`` against model ``b`` (``a`` sorts first)."""

    a: str
    b: str
    wins_a: int
    wins_b: int
    ties: int
    n: int
    win_rate_a: float | None  # over decisive judgements; None when all were ties
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    score_a: float
    tie_rate: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_choices(path: str | Path) -> list[Judgement]:
    """The judgements in one choices file; a clear error for anything else."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"ratings file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"ratings file {path} is not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("choices"), list):
        raise UserError(f'ratings file {path} is not a choices file from report.html (no "format": "{FORMAT}")')
    out = []
    for k, c in enumerate(data["choices"]):
        if (
            not isinstance(c, dict)
            or c.get("choice") not in CHOICES
            or not isinstance(c.get("left"), str)
            or not isinstance(c.get("right"), str)
            or c["left"] == c["right"]
        ):
            raise UserError(f"ratings file {path}: choice {k} needs distinct left/right models and choice in {CHOICES}")
        out.append(Judgement(c["left"], c["right"], c["choice"], c.get("prompt"), c.get("seed")))
    return out


def read_all(paths: Sequence[str | Path]) -> list[Judgement]:
    """Judgements of every file; a file given twice (same bytes) counts once."""
    seen: set[str] = set()
    out: list[Judgement] = []
    for p in paths:
        digest = hashlib.sha256(Path(p).expanduser().read_bytes()).hexdigest() if Path(p).is_file() else str(p)
        if digest in seen:
            log.warning("ratings file %s has the same content as an earlier one: counted once", p)
            continue
        seen.add(digest)
        out.extend(read_choices(p))
    return out


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    from scipy.stats import norm

    if n == 0:
        raise ValueError("no trials")
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def pair_stats(a: str, b: str, wins_a: int, wins_b: int, ties: int) -> PairResult:
    """The statistics of one pair from its counts."""
    from scipy.stats import binomtest

    n, decisive = wins_a + wins_b + ties, wins_a + wins_b
    rate = lo = hi = p = None
    if decisive:
        rate = wins_a / decisive
        lo, hi = wilson(wins_a, decisive)
        p = float(binomtest(wins_a, decisive, 0.5, alternative="two-sided").pvalue)
    return PairResult(
        a, b, wins_a, wins_b, ties, n, rate, lo, hi, p, (wins_a + ties / 2) / n if n else 0.0, ties / n if n else 0.0
    )


def summarize(judgements: Sequence[Judgement]) -> list[PairResult]:
    """One :class:`PairResult` per unordered model pair, pairs sorted by name."""
    counts: dict[tuple[str, str], list[int]] = {}
    for j in judgements:
        a, b = sorted((j.left, j.right))
        c = counts.setdefault((a, b), [0, 0, 0])
        if j.choice == "tie":
            c[2] += 1
        else:
            winner = j.left if j.choice == "left" else j.right
            c[0 if winner == a else 1] += 1
    return [pair_stats(a, b, *c) for (a, b), c in sorted(counts.items())]
