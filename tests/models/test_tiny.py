"""The built-in tiny model: a real diffusers folder that plain diffusers loads unchanged."""

import json

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
