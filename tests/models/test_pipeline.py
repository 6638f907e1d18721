"""Loading SD components and branches: the error paths a user meets."""

import pytest
import torch
from diffusers import ControlNetModel

from humanfix.errors import UserError
from humanfix.models import weights
from humanfix.models.pipeline import load_components, make_controlnet, read_branch_meta, write_branch_meta


def test_missing_folder_and_non_pipeline_folder(tmp_path):
    with pytest.raises(UserError, match="model not found"):
        load_components(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="model_index.json"):
        load_components(str(tmp_path))


def test_uncached_hub_id_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="hf download"):
        load_components("someone/not-a-real-model")


def test_single_file_needs_a_local_config(tmp_path, tiny_model):
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"")
    with pytest.raises(UserError, match="--model-config"):
        load_components(str(ckpt))
    with pytest.raises(UserError, match="model_index.json"):
        load_components(str(ckpt), model_config=tmp_path)
    other = tmp_path / "model.bin"
    other.write_bytes(b"")
    with pytest.raises(UserError, match=".safetensors or .ckpt"):
        load_components(str(other), model_config=tiny_model)
    with pytest.raises(UserError, match="cannot load"):  # an empty file is no checkpoint: one clear line
        load_components(str(ckpt), model_config=tiny_model)


def test_branch_fresh_from_the_unet_or_loaded(tiny_components, tmp_path):
    fresh = make_controlnet(tiny_components.unet)
    assert isinstance(fresh, ControlNetModel)
    unet_conv = tiny_components.unet.down_blocks[0].resnets[0].conv1.weight
    assert torch.equal(fresh.down_blocks[0].resnets[0].conv1.weight, unet_conv)
    fresh.save_pretrained(tmp_path / "branch")
    write_branch_meta(tmp_path / "branch", conditioning="pose", base_model="tiny")
    loaded = make_controlnet(tiny_components.unet, tmp_path / "branch")
    assert torch.equal(loaded.down_blocks[0].resnets[0].conv1.weight, unet_conv)
    assert read_branch_meta(tmp_path / "branch")["conditioning"] == "pose"
    assert read_branch_meta(tmp_path) == {}
    with pytest.raises(UserError, match="not found"):
        make_controlnet(tiny_components.unet, tmp_path / "missing")


def test_missing_asset_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError) as e:
        weights.FACENET_VGGFACE2.require()
    msg = str(e.value)
    assert "20180402-114759-vggface2.pt" in msg and str(tmp_path / "checkpoints") in msg and "\n" not in msg
    with pytest.raises(UserError, match="inception-2015-12-05.pt"):
        weights.INCEPTION_FID.require(tmp_path / "inception-2015-12-05.pt")
    assert weights.lpips_heads_path().is_file()


def test_hub_id_loads_from_the_local_cache_offline(tiny_model, run_offline):
    """A hub id resolves through the Hugging Face cache with no network (the real SD 1.5 path, with tiny weights)."""
    code = (
        "from humanfix.models.pipeline import load_components\n"
        "from humanfix.models.weights import sd15_location\n"
        "c = load_components('someone/tiny-sd')\n"
        "print(type(c.unet).__name__, sd15_location('someone/tiny-sd')[0])\n"
    )
    out = run_offline({"someone/tiny-sd": tiny_model}, code)
    assert out.split() == ["UNet2DConditionModel", "True"]


def test_a_hub_id_never_touches_the_network_unless_downloads_are_allowed(tmp_path):
    """HF_HUB_OFFLINE unset (a user's usual shell): the hub is never contacted, the error comes in seconds."""
    import os
    import socket
    import subprocess
    import sys
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    connections = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            connections.append(1)
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{server.getsockname()[1]}", HF_HUB_CACHE=str(tmp_path / "hub"))
    cmd = [sys.executable, "-m", "humanfix.cli", "generate", "a", "--model", "someone/not-cached", "--output", tmp_path]
    start = time.monotonic()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    finally:
        stop.set()
    assert r.returncode == 2, r.stderr[-1500:]
    assert "HF_HUB_OFFLINE=0" in r.stderr and "hf download someone/not-cached" in r.stderr
    assert connections == [] and time.monotonic() - start < 60


def test_downloads_are_opt_in(monkeypatch):
    for value, allowed in ((None, False), ("1", False), ("0", True), ("false", True)):
        if value is None:
            monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        else:
            monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert weights.downloads_allowed() is allowed, value


def test_missing_perceptual_weights_name_their_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError, match="pass its path with train --vgg-weights"):
        weights.VGG16.require()


def test_recorded_base_model_of_adapters(tmp_path):
    from humanfix.models.pipeline import recorded_base_model

    for name, base in (("a", "tiny"), ("b", "tiny"), ("c", "/models/sd15")):
        (tmp_path / name).mkdir()
        write_branch_meta(tmp_path / name, base_model=base)
    (tmp_path / "foreign").mkdir()
    assert recorded_base_model([tmp_path / "a", tmp_path / "b", tmp_path / "foreign"]) == "tiny"
    assert recorded_base_model([tmp_path / "foreign"]) is None
    with pytest.raises(UserError, match="different base models"):
        recorded_base_model([tmp_path / "a", tmp_path / "c"])
