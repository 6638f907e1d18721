"""A/B statistics on known tables: win rates, Wilson intervals, exact binomial tests, ties."""

from __future__ import annotations

import json
from math import comb

import pytest

from humanfix.errors import UserError
from humanfix.evaluate.ratings import FORMAT, Judgement, read_all, read_choices, summarize, wilson


def _file(path, choices):
    path.write_text(json.dumps({"format": FORMAT, "version": 1, "report_id": "r", "choices": choices}))
    return path


def test_known_table_15_to_5_with_ties():
    # ours beats base 15 times, loses 5, 4 ties; sides alternate so left/right bookkeeping is exercised.
    js = []
    for k in range(15):
        js.append(Judgement("ours", "base", "left") if k % 2 else Judgement("base", "ours", "right"))
    for k in range(5):
        js.append(Judgement("base", "ours", "left") if k % 2 else Judgement("ours", "base", "right"))
    js += [Judgement("ours", "base", "tie")] * 4
    (r,) = summarize(js)
    assert (r.a, r.b, r.wins_a, r.wins_b, r.ties, r.n) == ("base", "ours", 5, 15, 4, 24)
    assert r.win_rate_a == pytest.approx(0.25)
    # two-sided exact binomial: 2 * P(X <= 5 | 20, 1/2) = 2 * 21700 / 2^20
    assert sum(comb(20, k) for k in range(6)) == 21700
    assert r.p_value == pytest.approx(2 * 21700 / 2**20, rel=1e-9)
    # Wilson 95% for 5/20, by hand: centre (p + z²/2n)/(1 + z²/n), half z*sqrt(p(1-p)/n + z²/4n²)/(1 + z²/n)
    z = 1.959963984540054
    p, n = 0.25, 20
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    assert (r.ci_low, r.ci_high) == pytest.approx((centre - half, centre + half), rel=1e-9)
    assert (r.ci_low, r.ci_high) == pytest.approx((0.1119, 0.4687), abs=1e-4)
    assert r.score_a == pytest.approx((5 + 2) / 24)  # ties count half in the score
    assert r.tie_rate == pytest.approx(4 / 24)


def test_ties_only_and_even_split():
    (r,) = summarize([Judgement("a", "b", "tie")] * 3)
    assert r.win_rate_a is None and r.p_value is None and r.score_a == 0.5
    (r,) = summarize([Judgement("a", "b", "left"), Judgement("a", "b", "right")])
    assert r.win_rate_a == 0.5 and r.p_value == pytest.approx(1.0)


def test_three_models_give_three_pairs():
    js = [Judgement("x", "y", "left"), Judgement("y", "z", "right"), Judgement("z", "x", "tie")]
    assert [(r.a, r.b) for r in summarize(js)] == [("x", "y"), ("x", "z"), ("y", "z")]


def test_wilson_edges():
    assert wilson(0, 10)[0] == pytest.approx(0, abs=1e-12) and wilson(10, 10)[1] == pytest.approx(1)
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(1 - hi)


def test_files_are_read_checked_and_deduplicated(tmp_path):
    c = [
        {"pair": 0, "left": "a", "right": "b", "choice": "left"},
        {"pair": 1, "left": "b", "right": "a", "choice": "tie"},
    ]
    f1 = _file(tmp_path / "r1.json", c)
    f2 = _file(tmp_path / "r2.json", c[:1])
    assert len(read_choices(f1)) == 2
    assert len(read_all([f1, f2, f1])) == 3  # the repeated file counts once
    (tmp_path / "x.json").write_text("{nope")
    with pytest.raises(UserError, match="not JSON"):
        read_choices(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"choices": []}))
    with pytest.raises(UserError, match="not a choices file"):
        read_choices(tmp_path / "y.json")
    _file(tmp_path / "z.json", [{"left": "a", "right": "a", "choice": "left"}])
    with pytest.raises(UserError, match="choice 0"):
        read_choices(tmp_path / "z.json")
    with pytest.raises(UserError, match="not found"):
        read_choices(tmp_path / "missing.json")
