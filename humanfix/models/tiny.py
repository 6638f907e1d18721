"""The built-in tiny model: a random-weight SD 1.5 look-alike written as a real diffusers folder.

``--model tiny`` resolves to ``$HUMANFIX_HOME/models/tiny``. The folder is the standard
``StableDiffusionPipeline`` layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
scheduler/), so humanfix loads it through the same code as a real SD 1.5 and plain
``diffusers.StableDiffusionPipeline.from_pretrained`` loads it unchanged.

It keeps the shapes that matter: a VAE that downsamples by 8 into 4 latent channels with
``scaling_factor`` 0.18215, a cross-attention UNet, a CLIP text encoder with a byte-level BPE
tokenizer built here (no download), and SD 1.5's noise schedule. Its weights are random and
seeded: everything it draws is noise by design.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from humanfix.config import humanfix_home

TINY_NOTICE = "the built-in tiny model has random weights: its images are noise by design"
TINY_VERSION = 1  # bump when the architecture below changes; older folders are rebuilt


def tiny_model_dir() -> Path:
    return humanfix_home() / "models" / "tiny"


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes used by GPT-2/CLIP byte-level BPE, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def _write_clip_tokenizer(folder: Path, max_length: int = 77) -> int:
    """A CLIP tokenizer whose vocabulary is the 256 byte symbols (plain and word-final) plus specials.

    Every string tokenizes (byte-level BPE with no merges); returns the vocabulary size.
    """
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer.from_pretrained(folder, model_max_length=max_length)
    tok.save_pretrained(folder)
    return len(vocab)


def build_tiny_pipeline(folder: Path, seed: int = 0) -> None:
    """Write the tiny pipeline into ``folder`` (which must not exist yet).

    The tokenizer folder keeps vocab.json and merges.txt beside tokenizer.json, so both the slow and
    the fast CLIP tokenizer of any transformers version load it.
    """
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab_size = _write_clip_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=128,
        scaling_factor=0.18215,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    (folder / "humanfix_tiny.json").write_text(json.dumps({"version": TINY_VERSION, "seed": seed, "note": TINY_NOTICE}))


def _is_current(folder: Path) -> bool:
    marker = folder / "humanfix_tiny.json"
    return marker.is_file() and json.loads(marker.read_text()).get("version") == TINY_VERSION


def ensure_tiny_model() -> Path:
    """The tiny model's folder, written on first use.

    One process builds it while the others wait on a lock file beside it, then find it ready;
    the build goes to a temporary folder that is renamed into place, so a killed build leaves
    nothing half-written and no reader ever sees a folder being replaced.
    """
    from filelock import FileLock

    folder = tiny_model_dir()
    if _is_current(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(folder.parent / ".tiny.lock"):
        if _is_current(folder):  # built by the process that held the lock before us
            return folder
        tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=folder.parent))
        try:
            build_tiny_pipeline(tmp / "model")
            if folder.exists():  # an older version
                shutil.rmtree(folder)
            (tmp / "model").rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
