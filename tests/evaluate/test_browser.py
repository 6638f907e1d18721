"""report.html in a real headless Chromium: the images load, a click and a key record choices, nothing injected runs.

The page's ``#selftest`` hook (see report.py) clicks "left is better" on the first pair and presses →
on the second once the page has loaded, then writes what it saw into ``<pre id="selftest-result">``;
``--dump-dom`` hands back the DOM after that. Skips when Chromium is absent (CI installs Debian's
``chromium``; see .ci/run).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from humanfix.evaluate.report import write_report
from humanfix.evaluate.sets import group_by_model, read_generated

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _chromium() -> str | None:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _dump_dom(browser: str, url: str, profile: Path) -> str:
    cmd = [browser, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("embed", [True, False], ids=["embedded", "linked"])
def test_report_loads_and_records_choices_in_chromium(tmp_path, compare_output, malicious, embed):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    gen = compare_output(tmp_path / "gen", [malicious, "a child running"], [11, 12], ["base", "ours"])
    page = write_report(tmp_path / "out" / "report.html", group_by_model([read_generated(gen)]), embed=embed)
    dom = _dump_dom(browser, page.as_uri() + "#selftest", tmp_path / "profile")

    found = re.search(r'<pre id="selftest-result"[^>]*>(.*?)</pre>', dom, re.S)
    assert found, dom[-3000:]
    result = json.loads(html.unescape(found.group(1)))
    assert result["images"] == 8 and result["loaded"] == 8  # every gallery image decoded
    assert result["pairs"] == 4 and result["ab_loaded"] == 2  # the A/B pair on screen shows both images
    choices = result["export"]["choices"]
    assert [c["choice"] for c in choices] == ["left", "right"]  # the click, then the → key
    assert len(result["stored"]) == 2  # kept in localStorage
    assert result["export"]["format"] == "humanfix-ab-choices"
    assert {(c["left"], c["right"]) for c in choices} <= {("base", "ours"), ("ours", "base")}
    assert "judged 2/4" in result["progress"]
    assert "<title>humanfix evaluation</title>" in dom  # the prompt's onerror never ran
    assert dom.count("<img ") == 8 + 2  # gallery + the two A/B slots: the prompt made no element


def test_skeleton_overlay_is_drawn_over_the_images(tmp_path, compare_output):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    gen = compare_output(tmp_path / "gen", ["a person"], [1, 2], ["base", "ours"])
    groups = group_by_model([read_generated(gen)])
    standing = [
        [32, 6, 0.9],
        [33, 5, 0.9],
        [31, 5, 0.9],
        [34, 6, 0.9],
        [30, 6, 0.9],
        [39, 13, 0.9],
        [25, 13, 0.9],
        [39, 24, 0.9],
        [25, 24, 0.9],
        [40, 33, 0.9],
        [24, 33, 0.9],
        [35, 30, 0.9],
        [29, 30, 0.9],
        [35, 45, 0.9],
        [29, 45, 0.9],
        [35, 60, 0.3],
        [29, 60, 0.1],
    ]  # fmt: skip  left ankle drawn (confidence = the threshold: counted), right ankle not drawn
    person = {"keypoints": standing, "plausibility": 1.0, "failed": []}
    first = [it.path for it in groups["base"]]
    skeletons = {first[0]: {"w": 64, "h": 64, "persons": [person]}, first[1]: {"w": 64, "h": 64, "persons": []}}
    page = write_report(tmp_path / "out" / "report.html", groups, skeletons=skeletons, keypoint_threshold=0.3)
    dom = _dump_dom(browser, page.as_uri() + "#selftest", tmp_path / "profile")
    result = json.loads(html.unescape(re.search(r'<pre id="selftest-result"[^>]*>(.*?)</pre>', dom, re.S).group(1)))
    assert result["images"] == 4 and result["loaded"] == 4  # the images themselves are untouched
    assert result["skeletons"] == 2  # one SVG per image with pose data, shown while the toggle is on
    assert result["skeleton_lines"] == 19 - 1  # COCO's 19 bones, less the one that ends at the faint ankle
