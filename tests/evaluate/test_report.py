"""The report page: escaping of user text, A/B pairs, embedded vs linked images."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

from humanfix.evaluate.report import ab_pairs, script_json, write_report
from humanfix.evaluate.sets import group_by_model, read_generated


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _groups(tmp_path, compare_output, prompts=("a man", "a woman"), seeds=(1, 2), labels=("base", "ours")):
    return group_by_model([read_generated(compare_output(tmp_path / "gen", list(prompts), list(seeds), list(labels)))])


def test_malicious_prompt_is_escaped(tmp_path, compare_output, malicious):
    groups = _groups(tmp_path, compare_output, prompts=[malicious], seeds=[5], labels=["base", "<b>evil</b>"])
    metrics = {"models": {"<b>evil</b>": {"n_generated": 1, "fid": 1.5}}, "notes": ["<script>x</script>"]}
    page = write_report(tmp_path / "out" / "report.html", groups, metrics=metrics).read_text()
    parser = _Tags()
    parser.feed(page)
    imgs = [a for t, a in parser.tags if t == "img"]
    assert len([a for a in imgs if a.get("id", "").startswith("img-")]) == 2  # only our images became tags
    assert not any(a.get("src") == "x" for a in imgs)
    assert len([t for t, _ in parser.tags if t == "script"]) == 2  # the data block and the page's own script
    assert "<b>evil</b>" not in page and "&lt;b&gt;evil&lt;/b&gt;" in page
    assert "<script>alert(1)</script>" not in page and "<script>x</script>" not in page
    assert "&lt;img src=x onerror=&#34;" in page  # markupsafe writes " as &#34;
    data = json.loads(re.search(r'<script id="ab-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert data["pairs"][0]["prompt"] == malicious  # the script gets the prompt back intact, as data
    assert "@@" not in page.replace("@@DATA@@", "")  # no placeholder was expanded inside user text


def test_script_json_cannot_close_the_script_tag():
    s = script_json({"p": "</script><!-- & \u2028"})
    assert "<" not in s and ">" not in s and "&" not in s and json.loads(s)["p"] == "</script><!-- & \u2028"


def test_pairs_match_prompt_and_seed_and_sides_are_random(tmp_path, compare_output):
    groups = _groups(tmp_path, compare_output, prompts=[f"p{i}" for i in range(10)], seeds=[1, 2])
    ids = {it.path: n for n, it in enumerate(it for items in groups.values() for it in items)}
    pairs = ab_pairs(groups, ids, seed=0)
    assert len(pairs) == 20 and [p["pair"] for p in pairs] == list(range(20))
    paths = {v: k for k, v in ids.items()}
    for p in pairs:
        assert {p["left"], p["right"]} == {"base", "ours"}
        left, right = paths[p["left_img"]], paths[p["right_img"]]
        assert left.parent.name == p["left"] and right.parent.name == p["right"] and left.name == right.name
    assert 3 <= sum(p["left"] == "base" for p in pairs) <= 17
    assert ab_pairs(groups, ids, seed=0) == pairs and ab_pairs(groups, ids, seed=1) != pairs


def test_three_models_pair_up_and_unindexed_images_still_show(tmp_path, compare_output, noise_folder):
    groups = _groups(tmp_path, compare_output, prompts=["p"], seeds=[1], labels=["a", "b", "c"])
    ids = {it.path: n for n, it in enumerate(it for items in groups.values() for it in items)}
    assert sorted(tuple(sorted((p["left"], p["right"]))) for p in ab_pairs(groups, ids)) == [
        ("a", "b"), ("a", "c"), ("b", "c"),
    ]  # fmt: skip
    plain = group_by_model([read_generated(noise_folder(tmp_path / "plain", n=2))])
    page = write_report(tmp_path / "r.html", plain).read_text()
    assert "no index" in page and page.count('id="img-') == 2


def test_embedded_page_is_self_contained_and_linked_page_is_relative(tmp_path, compare_output):
    groups = _groups(tmp_path, compare_output)
    embedded = write_report(tmp_path / "out" / "report.html", groups, embed=True).read_text()
    srcs = re.findall(r'<img id="img-\d+" src="([^"]*)"', embedded)
    assert len(srcs) == 8 and all(s.startswith("data:image/png;base64,") for s in srcs)
    linked = write_report(tmp_path / "out" / "linked.html", groups, embed=False).read_text()
    srcs = re.findall(r'<img id="img-\d+" src="([^"]*)"', linked)
    assert len(srcs) == 8 and all(s.startswith("../gen/") for s in srcs)
    assert (tmp_path / "out" / srcs[0]).resolve().is_file()


def test_footnote_names_the_fid_mode_only_when_fid_ran():
    from humanfix.evaluate.report import metrics_table

    without = metrics_table({"models": {"base": {"n_generated": 4, "face_rate": 0.5}}})
    assert "mode" not in without["meta"] and "–" not in without["meta"]
    with_fid = metrics_table({"mode": "clean", "models": {"base": {"n_generated": 4, "fid": 12.0}}})
    assert with_fid["meta"].startswith("FID/KID mode clean")
