"""FID/KID: clean-fid's features, the Fréchet distance against references, bootstrap, saved statistics, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from humanfix.errors import UserError
from humanfix.evaluate import fid as M
from humanfix.evaluate.sets import list_images

CPU = torch.device("cpu")


def test_frechet_matches_the_closed_form_on_known_gaussians():
    # N(mu1, diag(s1^2)) vs N(mu2, diag(s2^2)): FID = |mu1 - mu2|^2 + sum (s1 - s2)^2 exactly.
    rng = np.random.default_rng(0)
    d, n = 6, 200_000
    mu1, mu2 = np.arange(d, dtype=float), np.arange(d, dtype=float)[::-1]
    s1, s2 = np.linspace(0.5, 2, d), np.linspace(2, 0.5, d)
    a, b = mu1 + s1 * rng.standard_normal((n, d)), mu2 + s2 * rng.standard_normal((n, d))
    exact = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    assert M.fid_from_features(a, b) == pytest.approx(exact, rel=5e-3)


def frechet_reference(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook Fréchet distance, |μa − μb|² + tr Σa + tr Σb − 2 tr (Σa Σb)^½, written independently of
    humanfix and of clean-fid (whose frechet_distance calls scipy.linalg.sqrtm(..., disp=False), which scipy
    1.18 removed): tr (Σa Σb)^½ is the sum of the square roots of the product's eigenvalues (real, ≥ 0)."""
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eig = np.linalg.eigvals(sa @ sb).real
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(sa) + np.trace(sb) - 2 * np.sqrt(np.clip(eig, 0, None)).sum())


@pytest.mark.parametrize("n1,n2,d", [(500, 300, 32), (24, 30, 96), (40, 1000, 64)])
def test_frechet_equals_the_textbook_formula(n1, n2, d):
    """Same number as the sqrtm route, with full-rank and rank-deficient (n < d) covariances."""
    rng = np.random.default_rng(n1 + d)
    a = rng.standard_normal((n1, d)) @ rng.standard_normal((d, d)) * 0.3
    b = np.maximum(rng.standard_normal((n2, d)) + 0.4, 0)
    ref = frechet_reference(a, b)
    assert M.fid_from_features(a, b) == pytest.approx(ref, rel=1e-6)
    assert abs(M.fid_from_features(a, a)) < 1e-6 * ref


def test_features_are_cleanfids_and_self_fid_is_zero(tmp_path, noise_folder, fake_inception):
    from cleanfid.fid import get_folder_features
    from cleanfid.inception_torchscript import InceptionV3W

    folder = noise_folder(tmp_path / "imgs", n=6, size=80)
    ext = M.load_inception(fake_inception, "clean", CPU)
    ours = M.image_features(list_images(folder), ext, batch_size=4)
    ref = get_folder_features(
        str(folder), InceptionV3W(str(fake_inception.parent), download=False), num_workers=0, batch_size=4,
        device=CPU, mode="clean", verbose=False,
    )  # fmt: skip
    assert ours.shape == (6, 2048)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    assert abs(M.fid_from_features(ours, ours)) < 1e-6
    assert M.fid_from_features(ours, ours[::-1]) == pytest.approx(0, abs=1e-6)  # order does not matter


def test_legacy_tensorflow_mode_runs_and_differs(tmp_path, noise_folder, fake_inception):
    folder = noise_folder(tmp_path / "imgs", n=3, size=64)
    clean = M.image_features(list_images(folder), M.load_inception(fake_inception, "clean", CPU))
    legacy = M.image_features(list_images(folder), M.load_inception(fake_inception, "legacy_tensorflow", CPU))
    assert legacy.shape == clean.shape and not np.allclose(legacy, clean)
    crops = [np.zeros((40, 30, 3), np.uint8), np.full((25, 25, 3), 200, np.uint8)]  # face crops differ in size
    for mode in M.MODES:
        assert M.array_features(crops, M.load_inception(fake_inception, mode, CPU)).shape == (2, 2048)


def test_bootstrap_interval_contains_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(1)
    real = rng.standard_normal((300, 16))
    gen = rng.standard_normal((120, 16)) * 1.2 + 0.3
    moments = M.Moments(real)
    est = M.frechet(moments, M.Moments(gen))
    bs = M.bootstrap_fid(moments, gen, 200, seed=3)
    assert bs.low < est < bs.high
    assert bs.bias > 0  # resamples repeat images: their FID is higher on average
    assert bs.high - bs.low > 0.01 * est
    again = M.bootstrap_fid(moments, gen, 200, seed=3)
    assert (again.low, again.high) == (bs.low, bs.high)
    with pytest.raises(UserError):
        M.bootstrap_fid(moments, gen, 1)


def test_kid_is_cleanfids_kernel_distance_seeded():
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((50, 32)), rng.standard_normal((40, 32)) + 0.5
    np.random.seed(5)
    ref = kernel_distance(a, b)
    state = np.random.get_state()
    assert M.kid_from_features(a, b, seed=5) == pytest.approx(ref)
    assert np.array_equal(np.random.get_state()[1], state[1])  # the global numpy stream is left alone
    assert abs(M.kid_from_features(a, a[::-1], seed=0)) < abs(ref)


def test_stats_round_trip_and_refuse_another_extractor(tmp_path, fake_inception):
    ext = M.load_inception(fake_inception, "clean", CPU)
    feats = np.random.default_rng(0).standard_normal((5, 2048)).astype(np.float32)
    path = M.save_stats("coco-val", feats, ext, "/data/val")
    assert path.parent.name == M.STATS_DIR and path.name == "coco-val_clean.npz"
    loaded, source = M.load_stats("coco-val", ext)
    np.testing.assert_array_equal(loaded, feats)
    assert source == "/data/val"
    with pytest.raises(UserError, match="no saved statistics 'nope'.*coco-val_clean.npz"):
        M.load_stats("nope", ext)
    other = M.Extractor(ext.model, ext.path, "0" * 64, "clean", CPU)
    with pytest.raises(UserError, match="another Inception file"):
        M.load_stats("coco-val", other)
    with pytest.raises(UserError, match="bad statistics name"):
        M.stats_path("../evil", "clean")


def test_missing_or_bad_weights_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match=r"inception-2015-12-05\.pt.*Download https://"):
        M.load_inception(tmp_path / "nowhere" / "inception-2015-12-05.pt", "clean", CPU)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not torchscript")
    with pytest.raises(UserError, match="not clean-fid's TorchScript Inception"):
        M.load_inception(junk, "clean", CPU)
    with pytest.raises(UserError, match="unknown FID mode"):
        M.load_inception(junk, "legacy_pytorch", CPU)


def test_unreadable_image_is_named(tmp_path, noise_folder, fake_inception):
    folder = noise_folder(tmp_path / "imgs", n=2)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ext = M.load_inception(fake_inception, "clean", CPU)
    with pytest.raises(UserError, match=r"cannot read image .*broken\.png"):
        M.image_features(list_images(folder), ext)
    with pytest.raises(UserError, match="at least 2 images"):
        M.Moments(np.zeros((1, 8)))


@pytest.mark.gpu
def test_fid_from_gpu_features_agrees_with_the_cpu(tmp_path, noise_folder, fake_inception):
    """CUDA convolutions use TF32 by default: features differ from the CPU's at ~1e-3, FID within 1%."""
    real = list_images(noise_folder(tmp_path / "real", n=8, seed=5))
    gen = list_images(noise_folder(tmp_path / "gen", n=8, seed=6, mean=100))
    fids = []
    for device in ("cpu", "cuda"):
        ext = M.load_inception(fake_inception, "clean", torch.device(device))
        fids.append(M.fid_from_features(M.image_features(real, ext), M.image_features(gen, ext)))
    assert fids[1] == pytest.approx(fids[0], rel=1e-2)
