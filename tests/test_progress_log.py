"""Progress lines for batch jobs (stdout not a terminal)."""

import io

from humanfix.progress_log import ProgressLines, clock


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def line(step):
    return {"step": step, "loss": 0.5, "loss_ldm": 0.4, "loss_lpips": float("nan"), "images_per_s": 2.0}


def test_a_line_every_n_updates_and_at_the_end_when_not_a_terminal():
    out = io.StringIO()
    lines = ProgressLines(total=7, start=0, every=3, stream=out)
    printed = [lines.update(line(s)) for s in range(1, 8)]
    assert [p is not None for p in printed] == [False, False, True, False, False, True, True]
    first = printed[2]
    assert first.startswith("step 3/7 · loss 0.5000 (ldm 0.4000) · 2.00 img/s · elapsed ")
    assert "ETA" in first and "lpips" not in first  # absent terms are left out
    assert out.getvalue().count("\n") == 3


def test_nothing_on_a_terminal_or_with_every_zero():
    for lines in (ProgressLines(5, 0, 1, stream=Terminal()), ProgressLines(5, 0, 0, stream=io.StringIO())):
        assert all(lines.update(line(s)) is None for s in range(1, 6))


def test_clock():
    assert clock(3725.2) == "1:02:05" and clock(float("nan")) == "?"
