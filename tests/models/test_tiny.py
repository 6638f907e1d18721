"""The built-in tiny model: a real diffusers folder that plain diffusers loads unchanged."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from humanfix.models.pipeline import load_components
from humanfix.models.tiny import TINY_VERSION, ensure_tiny_model, tiny_model_dir


def test_written_under_humanfix_home_in_the_pipeline_layout(tiny_model, monkeypatch, tmp_path):
    assert tiny_model == tiny_model_dir()
    for part in ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_model / part).exists(), part
    assert (tiny_model / "tokenizer" / "vocab.json").is_file() and (tiny_model / "tokenizer" / "merges.txt").is_file()
    assert json.loads((tiny_model / "humanfix_tiny.json").read_text())["version"] == TINY_VERSION
    monkeypatch.setenv("HUMANFIX_HOME", str(tmp_path))
    assert tiny_model_dir() == tmp_path / "models" / "tiny"


def test_plain_diffusers_loads_it_and_the_unet_runs(tiny_model):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None)
    assert pipe.vae_scale_factor == 8 and pipe.vae.config.latent_channels == 4
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    ids = pipe.tokenizer(["a person skiing"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    text = pipe.text_encoder(ids)[0]
    out = pipe.unet(torch.randn(1, 4, 8, 8), torch.tensor([10]), encoder_hidden_states=text).sample
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
    image = pipe.vae.decode(torch.randn(1, 4, 8, 8)).sample
    assert image.shape == (1, 3, 64, 64)


def test_loaded_through_the_same_path_as_a_real_model(tiny_model):
    by_name = load_components("tiny")
    by_folder = load_components(str(tiny_model))
    assert by_name.is_tiny and not by_folder.is_tiny
    for a, b in zip(by_name.unet.parameters(), by_folder.unet.parameters(), strict=True):
        assert torch.equal(a, b)


def test_rebuilt_when_its_version_is_stale(tiny_model):
    marker = tiny_model / "humanfix_tiny.json"
    marker.write_text(json.dumps({"version": -1}))
    assert ensure_tiny_model() == tiny_model
    assert json.loads(marker.read_text())["version"] == TINY_VERSION


def test_two_processes_on_a_fresh_home_build_it_once(tmp_path):
    """Both find the model ready; the second waits for the first instead of replacing its folder."""
    builds = tmp_path / "builds.txt"
    script = (
        "import humanfix.models.tiny as tiny\n"
        "build = tiny.build_tiny_pipeline\n"
        "def counted(folder, seed=0):\n"
        f"    open({str(builds)!r}, 'a').write('built\\n')\n"
        "    build(folder, seed)\n"
        "tiny.build_tiny_pipeline = counted\n"
        "print(tiny.ensure_tiny_model())\n"
    )
    env = {**os.environ, "HUMANFIX_HOME": str(tmp_path / "home")}
    runs = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [run.communicate(timeout=300)[0].strip() for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert outs == [str(tmp_path / "home" / "models" / "tiny")] * 2
    assert builds.read_text().count("built") == 1
    assert json.loads((Path(outs[0]) / "humanfix_tiny.json").read_text())["version"] == TINY_VERSION
