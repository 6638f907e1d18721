"""Face metrics on real photos and on noise, face crops, and the CLIP score with a tiny local CLIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from humanfix.evaluate import faces as F

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def detector():
    return F.load_detector(CPU)


def test_faces_found_in_photos_not_in_noise(ochuman, tmp_path, noise_folder, detector):
    photos = sorted(ochuman.glob("*.jpg"))
    noise = sorted(noise_folder(tmp_path / "noise", n=2, size=160).glob("*.png"))
    dets = F.detect_faces(photos + noise, detector)
    s = F.summarize(dets[: len(photos)], 0.9)
    assert s.n_images == len(photos) and s.rate == 1.0 and s.mean_confidence > 0.95
    assert s.n_faces >= len(photos)
    assert F.summarize(dets[len(photos) :], 0.9).rate == 0.0
    mixed = F.summarize(dets, 0.9)
    assert mixed.rate == pytest.approx(len(photos) / (len(photos) + 2))
    assert mixed.mean_confidence == s.mean_confidence  # images without a face don't lower the confidence
    assert all(np.all(np.diff(d.probs) <= 0) for d in dets)  # most probable first
    crops = F.face_crops(photos, dets[: len(photos)], 0.9, margin=0.2)
    assert len(crops) == s.n_faces and all(c.ndim == 3 and c.shape[2] == 3 and c.dtype == np.uint8 for c in crops)


def test_square_box_adds_margin_and_clips():
    assert F.square_box((10, 20, 30, 60), 0.0, 100, 100) == (0, 20, 40, 60)  # 20x40 box -> 40x40 square
    assert F.square_box((10, 20, 30, 60), 0.25, 100, 100) == (0, 10, 50, 70)  # +10 px each side, clipped left
    assert F.square_box((90, 90, 99, 99), 0.5, 100, 100)[2:] == (100, 100)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory, tiny_model):
    """A random CLIP (text + vision) saved as a local folder, with the tiny model's byte-level tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tiny_model / "tokenizer")
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                           num_attention_heads=4),
        projection_dim=16,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(cfg).eval().save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tok).save_pretrained(folder)
    return folder


def test_clip_score_matches_a_direct_computation(tmp_path, noise_folder, tiny_clip):
    files = sorted(noise_folder(tmp_path / "imgs", n=3, size=48).glob("*.png"))
    prompts = ["a man waving", None, "two people & a dog"]
    clip = F.load_clip(str(tiny_clip), CPU)
    assert not isinstance(clip, str)
    cs = F.clip_score(files, prompts, clip, batch_size=2)
    assert cs.n == 2 and cs.note is None
    model, processor = clip
    expected = []
    for f, p in [(files[0], prompts[0]), (files[2], prompts[2])]:
        inp = processor(text=[p], images=[Image.open(f).convert("RGB")], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model(**inp)
        cos = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds).item()
        expected.append(100 * max(cos, 0))
    assert cs.per_image == pytest.approx(expected, abs=1e-4)
    assert cs.score == pytest.approx(np.mean(expected), abs=1e-4)
    assert F.clip_score(files, [None] * 3, clip).score is None


def test_clip_weights_missing_is_a_note_not_an_error(tmp_path):
    note = F.load_clip(str(tmp_path / "no-clip-here"), CPU)
    assert isinstance(note, str) and "CLIP score skipped" in note and "--clip-model" in note
