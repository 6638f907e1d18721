"""The CLI chain end to end, as `make demo` runs it: sample set -> prepare-data -> train (a branch and a LoRA)
-> generate -> evaluate."""

import json

import numpy as np
import pytest
from PIL import Image

from humanfix.data.sample import write_sample_coco


def test_sample_set_is_valid_coco(tmp_path):
    from pycocotools.coco import COCO

    root = write_sample_coco(tmp_path / "coco")
    coco = COCO(str(root / "annotations" / "person_keypoints_val2017.json"))
    assert len(coco.getImgIds()) == 6
    for ann in coco.loadAnns(coco.getAnnIds()):
        info = coco.loadImgs(ann["image_id"])[0]
        assert Image.open(root / "val2017" / info["file_name"]).size == (info["width"], info["height"])
        assert 0.15 < coco.annToMask(ann).mean() < 0.8
        assert ann["num_keypoints"] >= 5


def test_cli_chain(tmp_path, humanfix_cli):
    coco = write_sample_coco(tmp_path / "coco")
    data, run, lora, gen, ev = (tmp_path / n for n in ("data", "run", "lora-run", "generate", "evaluate"))
    steps = [
        ["prepare-data", "--coco-root", coco, "--split", "val", "--resolution", "64", "--min-face-size", "8",
         "--workers", "1", "--output", data],
        ["train", "--model", "tiny", "--data", data, "--split", "val", "--batch-size", "2", "--max-steps", "2",
         "--lambda-lpips", "0.2", "--lambda-face", "0.5", "--timestep-threshold", "1000", "--output", run],
        ["train", "--model", "tiny", "--adapter", "lora", "--lora-rank", "4", "--data", data, "--split", "val",
         "--batch-size", "2", "--max-steps", "1", "--lambda-lpips", "0.5", "--timestep-threshold", "1000",
         "--output", lora],
        ["generate", "a person smiling", "--model", "tiny", "--compare", f"base,{run / 'controlnet'},{lora / 'lora'}",
         "--steps", "2", "--height", "64", "--width", "64", "--output", gen],
        ["evaluate", "--faces", "--pose", "--pose-weights", "random", "--report", "--generated", gen, "--real",
         data / "val", "--output", ev],
    ]  # fmt: skip
    for args in steps:
        code, out, err = humanfix_cli(args)
        assert code == 0, f"{args[0]} failed: {err[-1500:]}"
    records = [json.loads(line) for line in (data / "val" / "metadata.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(r["face_boxes"] for r in records)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["loss_lpips"] is not None and metrics[-1]["loss_face"] is not None
    index = [json.loads(line) for line in (gen / "index.jsonl").read_text().splitlines()]
    assert len(index) == 3 and [r["label"] for r in index] == ["base", "run", "lora-run"]
    assert (ev / "report.html").is_file() and (ev / "metrics.json").is_file()
    evaluated = json.loads((ev / "metrics.json").read_text())
    assert evaluated["pose_setup"]["weights"] == "random" and evaluated["real"]["pose"]["n_images"] == 6
    assert all(m["pose"]["n_images"] == 1 for m in evaluated["models"].values())
    assert set(evaluated["models"]) == {"base", "run", "lora-run"}


@pytest.mark.gpu
def test_demo_chain_on_cuda(tmp_path, humanfix_cli, fresh_accelerate_state):
    """`make demo`'s chain, shortened, with every stage on the GPU."""
    coco = write_sample_coco(tmp_path / "coco")
    data, run, gen, ev = (tmp_path / n for n in ("data", "run", "generate", "evaluate"))
    steps = [
        ["prepare-data", "--coco-root", coco, "--split", "val", "--resolution", "128", "--min-face-size", "8",
         "--workers", "1", "--output", data],
        ["train", "--model", "tiny", "--data", data, "--split", "val", "--batch-size", "2", "--max-steps", "4",
         "--mixed-precision", "bf16", "--lambda-lpips", "0.2", "--lambda-face", "0.5", "--timestep-threshold", "1000",
         "--output", run],
        ["generate", "a person smiling", "--model", "tiny", "--compare", f"base,{run / 'controlnet'}", "--steps", "4",
         "--height", "128", "--width", "128", "--output", gen],
        ["evaluate", "--faces", "--pose", "--pose-weights", "random", "--report", "--generated", gen, "--real", data,
         "--output", ev],
    ]  # fmt: skip
    for args in steps:
        code, _, err = humanfix_cli(args)
        assert code == 0, f"{args[0]} failed: {err[-1500:]}"
        fresh_accelerate_state()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss_lpips"] is not None and rows[-1]["loss_face"] is not None
    assert all(np.isfinite(r["loss"]) for r in rows) and rows[-1]["peak_memory_gb"] > 0
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["device"].startswith("cuda") and metrics["n_real"] == 6
    assert metrics["real"]["pose"]["n_images"] == 6 and metrics["pose_setup"]["weights"] == "random"
