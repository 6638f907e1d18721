"""The objective: gradient path into the branch, gating, the weight rule, invariances."""

import pytest
import torch
from diffusers import ControlNetModel

from humanfix.errors import UserError
from humanfix.losses.objective import HAND_CROP_SIZE, SUM_KEYS, MaskAwareObjective, ObjectiveConfig

RES = 64  # pixels; latents are 8×8


def make_objective(components, **kw):
    kw.setdefault("lambda_lpips", 0.0)  # these tests name each λ they use: the others are 0 (not the paper's defaults)
    kw.setdefault("lambda_face", 0.0)
    kw.setdefault("perceptual_weights", "random")
    kw.setdefault("lpips_crop_size", 32)
    cfg = ObjectiveConfig(**kw)
    sched = components.noise_scheduler
    return MaskAwareObjective(cfg, sched.alphas_cumprod, sched.config.prediction_type, sched.config.num_train_timesteps)


def scene(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, RES, RES, generator=g) * 2 - 1
    masks = torch.zeros(n, 1, RES, RES)
    masks[:, :, 8:56, 16:48] = 1
    persons = [torch.tensor([[16.0, 8.0, 48.0, 56.0]]) for _ in range(n)]
    faces = [torch.tensor([[24.0, 10.0, 40.0, 26.0]]) for _ in range(n)]
    return images, masks, persons, faces


def branch_step(components, objective, timesteps, seed=0):
    """One forward of UNet + fresh ControlNet branch and the objective; returns (branch, output)."""
    torch.manual_seed(seed)
    vae, unet, text_encoder = components.vae, components.unet, components.text_encoder
    for m in (vae, unet, text_encoder):
        m.requires_grad_(False)
    branch = ControlNetModel.from_unet(unet)
    n = len(timesteps)
    images, masks, persons, faces = scene(n, seed)
    latents = vae.encode(images).latent_dist.sample() * vae.config.scaling_factor
    noise = torch.randn_like(latents)
    t = torch.tensor(timesteps)
    noisy = components.noise_scheduler.add_noise(latents, noise, t)
    ids = components.tokenizer(["a person"] * n, padding="max_length", max_length=77, return_tensors="pt").input_ids
    text = text_encoder(ids)[0]
    down, mid = branch(
        noisy, t, encoder_hidden_states=text, controlnet_cond=torch.zeros(n, 3, RES, RES), return_dict=False
    )
    pred = unet(
        noisy, t, encoder_hidden_states=text, down_block_additional_residuals=down, mid_block_additional_residual=mid
    ).sample
    out = objective(vae, pred, noise, noisy, t, images, masks, persons, faces)
    return branch, out


def zero_conv_grad(branch):
    return sum(
        p.grad.abs().sum().item()
        for n, p in branch.named_parameters()
        if n.startswith(("controlnet_down_blocks", "controlnet_mid_block")) and p.grad is not None
    )


@pytest.mark.parametrize("term", ["lpips", "face"])
def test_perceptual_term_alone_reaches_the_branch(tiny_components, term):
    lam = {"lambda_lpips": 1.0} if term == "lpips" else {"lambda_face": 1.0}
    objective = make_objective(tiny_components, timestep_threshold=1000, **lam)
    branch, out = branch_step(tiny_components, objective, [10, 20])
    assert out.n_gated == 2
    assert getattr(out, term) is not None and getattr(out, term).item() > 0
    # L_LDM has zero weight: the whole total is the perceptual term.
    torch.testing.assert_close(out.total, out.per_sample[term].mean())
    out.total.backward()
    assert zero_conv_grad(branch) > 0
    for frozen in (tiny_components.vae, tiny_components.unet, tiny_components.text_encoder):
        assert all(p.grad is None for p in frozen.parameters())
    nets = objective.lpips if term == "lpips" else objective.face
    assert all(p.grad is None for p in nets.parameters())


def test_decoder_stays_in_the_graph_under_full_and_box_decoding(tiny_components):
    for region in ("full", "boxes"):
        objective = make_objective(tiny_components, lambda_lpips=1.0, timestep_threshold=1000, decode_region=region)
        branch, out = branch_step(tiny_components, objective, [3])
        out.total.backward()
        assert zero_conv_grad(branch) > 0, region


def test_ungated_samples_get_exactly_the_ldm_loss(tiny_components):
    objective = make_objective(tiny_components, lambda_lpips=0.3, lambda_face=0.5, timestep_threshold=100)
    _, out = branch_step(tiny_components, objective, [100, 999])
    assert out.n_gated == 0 and out.lpips is None and out.face is None
    assert torch.equal(out.total, out.ldm)


def test_mixed_batch_weighs_each_sample(tiny_components):
    objective = make_objective(tiny_components, lambda_lpips=0.3, lambda_face=0.5, timestep_threshold=100)
    _, out = branch_step(tiny_components, objective, [5, 500])
    ps = out.per_sample
    assert out.n_gated == 1
    expected = (0.2 * ps["ldm"][0] + 0.3 * ps["lpips"][0] + 0.5 * ps["face"][0] + ps["ldm"][1]) / 2
    torch.testing.assert_close(out.total, expected)
    assert ps["lpips"][1] == 0 and ps["face"][1] == 0


def test_sample_without_face_hands_its_weight_to_ldm(tiny_components):
    cfg = dict(lambda_lpips=0.3, lambda_face=0.5, timestep_threshold=1000)
    objective = make_objective(tiny_components, **cfg)
    images, masks, persons, faces = scene(2)
    faces[1] = torch.zeros(0, 4)
    pred, target, noisy = torch.randn(3, 2, 4, 8, 8).unbind(0)
    out = objective(tiny_components.vae, pred, target, noisy, torch.tensor([1, 1]), images, masks, persons, faces)
    ps = out.per_sample
    assert ps["w_face"].tolist() == [0.5, 0.0] and ps["w_lpips"].tolist() == [pytest.approx(0.3)] * 2
    expected = (
        0.2 * ps["ldm"][0] + 0.3 * ps["lpips"][0] + 0.5 * ps["face"][0] + 0.7 * ps["ldm"][1] + 0.3 * ps["lpips"][1]
    ) / 2
    torch.testing.assert_close(out.total, expected)


def test_identical_images_give_zero_perceptual_terms(tiny_components):
    from humanfix.losses.face import FaceFeatureLoss
    from humanfix.losses.perceptual import MaskedLPIPS

    images, masks, persons, faces = scene(2)
    lp, has = MaskedLPIPS(pretrained=False, crop_size=32)(images, images.clone(), masks, persons)
    assert has.all() and lp.abs().max() == 0
    fc, has = FaceFeatureLoss(pretrained=False)(images, images.clone(), faces)
    assert has.all() and fc.abs().max() == 0


def test_pixels_outside_every_person_box_cannot_change_lpips():
    from humanfix.losses.perceptual import MaskedLPIPS

    torch.manual_seed(0)
    lpips = MaskedLPIPS(pretrained=False, crop_size=32)
    images, masks, persons, _ = scene(2)
    decoded = images + 0.3 * torch.randn_like(images)
    base, _ = lpips(decoded, images, masks, persons)
    changed = decoded.clone()
    outside = torch.ones(RES, RES, dtype=torch.bool)
    outside[8:56, 16:48] = False
    changed[:, :, outside] = torch.rand_like(changed[:, :, outside])
    again, _ = lpips(changed, images, masks, persons)
    assert torch.equal(base, again)
    inside = decoded.clone()
    inside[:, :, 20:30, 20:30] += 0.5
    moved, _ = lpips(inside, images, masks, persons)
    assert (moved != base).all()


def test_lpips_layer_weights_apply():
    from humanfix.losses.perceptual import MaskedLPIPS

    torch.manual_seed(0)
    images, masks, persons, _ = scene(1)
    decoded = images + 0.3 * torch.randn_like(images)
    parts = []
    for k in range(5):
        w = [0.0] * 5
        w[k] = 1.0
        torch.manual_seed(0)
        parts.append(MaskedLPIPS(pretrained=False, layer_weights=w, crop_size=32)(decoded, images, masks, persons)[0])
    torch.manual_seed(0)
    total, _ = MaskedLPIPS(pretrained=False, crop_size=32)(decoded, images, masks, persons)
    torch.testing.assert_close(total, sum(parts))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"lambda_lpips": -0.1}, ">= 0"),
        ({"lambda_lpips": 0.8, "lambda_face": 0.5}, "<= 1"),
        ({"timestep_threshold": -1}, "timestep-threshold"),
        ({"perceptual_weights": "imagenet"}, "perceptual-weights"),
        ({"lpips_layer_weights": (1.0, 1.0)}, "lpips-layer-weights"),
    ],
)
def test_config_validation(kw, match):
    with pytest.raises(UserError, match=match):
        ObjectiveConfig(**kw)


def test_threshold_above_schedule_length_is_rejected(tiny_components):
    with pytest.raises(UserError, match="num_train_timesteps"):
        make_objective(tiny_components, timestep_threshold=1001)


def test_missing_pretrained_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError, match="vgg16-397923af.pth"):
        ObjectiveConfig(lambda_lpips=0.5)  # config is fine...
        MaskAwareObjective(ObjectiveConfig(lambda_lpips=0.5), torch.ones(1000))  # ...building it needs the file
    with pytest.raises(UserError, match="20180402-114759-vggface2.pt"):
        MaskAwareObjective(ObjectiveConfig(lambda_lpips=0.0, lambda_face=0.5), torch.ones(1000))


@pytest.mark.parametrize("margin", [0, 2])
def test_face_crop_never_reads_outside_the_decoded_window(tiny_components, margin):
    """A face box far taller than wide, face term alone, box decoding: the face network must see decoded pixels
    only (the window covers the squared face box the crop reads), never the zero canvas around the window."""
    objective = make_objective(tiny_components, lambda_face=1.0, timestep_threshold=1000, decode_margin=margin)
    seen = []
    objective.face.net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    res, lat = 256, 32
    g = torch.Generator().manual_seed(0)
    noisy, pred, target = torch.randn(3, 1, 4, lat, lat, generator=g).unbind(0)
    images = torch.rand(1, 3, res, res, generator=g) * 2 - 1
    face = torch.tensor([[100.0, 60.0, 140.0, 200.0]])  # 40 wide, 140 tall: the square is 140 wide
    out = objective(
        tiny_components.vae, pred, target, noisy, torch.tensor([10]), images, torch.ones(1, 1, res, res),
        [torch.zeros(0, 4)], [face],
    )  # fmt: skip
    assert out.face is not None and len(seen) == 2  # decoded crop, then the real one
    decoded_crop = seen[0][0]
    assert (decoded_crop.abs().amax(dim=(0, 1)) > 0).all(), "all-zero columns: the crop read the blank canvas"
    assert (decoded_crop.abs().amax(dim=(0, 2)) > 0).all(), "all-zero rows: the crop read the blank canvas"


def test_constants_stay_exact_float32_when_the_objective_moves_to_bf16():
    """train moves the objective with ``.to(device, dtype=bf16)``: the networks go to bf16, but the constants of
    the distances (LPIPS' shift/scale, heads and layer weights, the face term's layer weights) keep their exact
    float32 values (bf16 would make 0.1 into 0.10009766 and −0.188 into −0.18848)."""
    cfg = ObjectiveConfig(
        lambda_lpips=0.5, lambda_face=0.3, perceptual_weights="random", lpips_layer_weights=(0.1, 0.2, 0.3, 0.4, 0.5),
        face_layer_weights=(0.1, 0.7, 0.3, 0.9, 1.1), lambda_hand=0.2, hand_layer_weights=(0.1, 0.3, 0.5, 0.7, 0.9),
    )  # fmt: skip
    fp32 = MaskAwareObjective(cfg, torch.ones(1000))
    half = MaskAwareObjective(cfg, torch.ones(1000)).to("cpu", dtype=torch.bfloat16)
    constants = {
        "lpips.shift": (fp32.lpips.shift, half.lpips.shift),
        "lpips.scale": (fp32.lpips.scale, half.lpips.scale),
        "lpips.layer_weights": (fp32.lpips.layer_weights, half.lpips.layer_weights),
        "face.layer_weights": (fp32.face.layer_weights, half.face.layer_weights),
        "hand_layer_weights": (fp32.hand_layer_weights, half.hand_layer_weights),
        **{
            f"lpips.lins.{k}": (a.weight, b.weight)
            for k, (a, b) in enumerate(zip(fp32.lpips.lins, half.lpips.lins, strict=True))
        },
    }
    for name, (exact, kept) in constants.items():
        assert kept.dtype == torch.float32 and torch.equal(kept, exact), name
    assert half.lpips.shift[0, 2, 0, 0].item() == torch.tensor(-0.188).item()
    assert half.face.layer_weights[0].item() == torch.tensor(0.1).item()
    assert half.lpips.features[0].weight.dtype == torch.bfloat16  # the networks themselves do run in bf16
    assert next(half.face.net.parameters()).dtype == torch.bfloat16
    g = torch.Generator().manual_seed(0)
    x, y = (torch.rand(2, 1, 3, 32, 32, generator=g) * 2 - 1).unbind(0)
    assert half.lpips.distance_map(x, y).dtype == torch.float32


# -- the hand term (λ3): LPIPS-VGG on hand crops, HAND_CROP_SIZE² --------------------------------------------------

HANDS = [torch.tensor([[16.0, 36.0, 28.0, 48.0], [36.0, 36.0, 48.0, 48.0]]) for _ in range(2)]  # two 12-px hands


def spy_on_vgg(objective, monkeypatch, record):
    """A list that gets ``record(x)`` of every decoded batch the LPIPS network compares."""
    seen, real = [], objective.lpips.distance_map

    def spy(x, y, layer_weights=None):
        seen.append(record(x))
        return real(x, y, layer_weights)

    monkeypatch.setattr(objective.lpips, "distance_map", spy)
    return seen


def test_hand_term_alone_reaches_the_branch_and_only_the_branch(tiny_components):
    objective = make_objective(tiny_components, lambda_hand=1.0, timestep_threshold=1000)
    torch.manual_seed(0)
    vae, unet, text_encoder = tiny_components.vae, tiny_components.unet, tiny_components.text_encoder
    for m in (vae, unet, text_encoder):
        m.requires_grad_(False)
    branch = ControlNetModel.from_unet(unet)
    images, masks, persons, faces = scene(2)
    latents = vae.encode(images).latent_dist.sample() * vae.config.scaling_factor
    noise, t = torch.randn_like(latents), torch.tensor([10, 20])
    noisy = tiny_components.noise_scheduler.add_noise(latents, noise, t)
    ids = tiny_components.tokenizer(["a hand"] * 2, padding="max_length", max_length=77, return_tensors="pt").input_ids
    text = text_encoder(ids)[0]
    down, mid = branch(noisy, t, encoder_hidden_states=text, controlnet_cond=torch.zeros(2, 3, RES, RES),
                       return_dict=False)  # fmt: skip
    pred = unet(noisy, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                mid_block_additional_residual=mid).sample  # fmt: skip
    out = objective(vae, pred, noise, noisy, t, images, masks, persons, faces, hand_boxes=HANDS)
    assert out.hand is not None and out.hand.item() > 0 and out.lpips is None and out.face is None
    torch.testing.assert_close(out.total, out.per_sample["hand"].mean())  # L_LDM has zero weight
    out.total.backward()
    assert zero_conv_grad(branch) > 0
    for frozen in (vae, unet, text_encoder, objective.lpips):
        assert all(p.grad is None for p in frozen.parameters())
    assert out.sums().shape == (len(SUM_KEYS),) and out.sums()[SUM_KEYS.index("n_hand")] == 2


def test_sample_without_hand_hands_its_weight_to_ldm(tiny_components):
    objective = make_objective(tiny_components, lambda_lpips=0.2, lambda_face=0.5, lambda_hand=0.2,
                               timestep_threshold=1000)  # fmt: skip
    images, masks, persons, faces = scene(2)
    hands = [HANDS[0], torch.zeros(0, 4)]
    pred, target, noisy = torch.randn(3, 2, 4, 8, 8).unbind(0)
    t = torch.tensor([1, 1])
    out = objective(tiny_components.vae, pred, target, noisy, t, images, masks, persons, faces, hand_boxes=hands)
    ps = out.per_sample
    assert ps["w_hand"].tolist() == [pytest.approx(0.2), 0.0] and ps["has_hand"].tolist() == [True, False]
    expected = (
        0.1 * ps["ldm"][0] + 0.2 * ps["lpips"][0] + 0.5 * ps["face"][0] + 0.2 * ps["hand"][0]
        + 0.3 * ps["ldm"][1] + 0.2 * ps["lpips"][1] + 0.5 * ps["face"][1]
    ) / 2  # fmt: skip
    torch.testing.assert_close(out.total, expected)
    assert ps["hand"][0] > 0 and ps["hand"][1] == 0
    torch.testing.assert_close(out.hand, ps["hand"][0])  # the logged term: the mean over samples with a hand


def test_hand_crops_are_hand_crop_size_and_use_the_hand_layer_weights(tiny_components, monkeypatch):
    """The hand term runs the shared VGG on HAND_CROP_SIZE² crops with its own β_l: relu1_2 alone, then the rest."""
    images, masks, persons, faces = scene(1)
    pred, target, noisy = torch.randn(3, 1, 4, 8, 8).unbind(0)
    values = {}
    for name, w in (("first", (1.0, 0, 0, 0, 0)), ("rest", (0, 1.0, 1.0, 1.0, 1.0)), ("all", (1.0,) * 5)):
        objective = make_objective(tiny_components, lambda_hand=0.5, hand_layer_weights=w, timestep_threshold=1000)
        sizes = spy_on_vgg(objective, monkeypatch, lambda x: x.shape)
        out = objective(tiny_components.vae, pred, target, noisy, torch.tensor([3]), images, masks, persons, faces,
                        hand_boxes=HANDS[:1])  # fmt: skip
        assert sizes == [torch.Size([2, 3, HAND_CROP_SIZE, HAND_CROP_SIZE])]  # both hands in one VGG batch
        values[name] = out.hand
    torch.testing.assert_close(values["first"] + values["rest"], values["all"])


@pytest.mark.parametrize("margin", [0, 2])
def test_hand_crop_never_reads_outside_the_decoded_window(tiny_components, monkeypatch, margin):
    """A hand box far wider than tall, hand term alone, box decoding: VGG must see decoded pixels only (the window
    covers the squared hand box the crop reads), never the zero canvas around the window."""
    objective = make_objective(tiny_components, lambda_hand=1.0, timestep_threshold=1000, decode_margin=margin)
    seen = spy_on_vgg(objective, monkeypatch, lambda x: x.detach())
    res, lat = 256, 32
    g = torch.Generator().manual_seed(0)
    noisy, pred, target = torch.randn(3, 1, 4, lat, lat, generator=g).unbind(0)
    images = torch.rand(1, 3, res, res, generator=g) * 2 - 1
    hand = torch.tensor([[60.0, 120.0, 190.0, 150.0]])  # 130 wide, 30 tall: the square is 130 tall
    out = objective(
        tiny_components.vae, pred, target, noisy, torch.tensor([10]), images, torch.ones(1, 1, res, res),
        [torch.zeros(0, 4)], [torch.zeros(0, 4)], hand_boxes=[hand],
    )  # fmt: skip
    assert out.hand is not None and len(seen) == 1
    crop = seen[0][0]
    assert (crop.abs().amax(dim=(0, 1)) > 0).all(), "all-zero columns: the crop read the blank canvas"
    assert (crop.abs().amax(dim=(0, 2)) > 0).all(), "all-zero rows: the crop read the blank canvas"


def test_hand_term_off_reads_no_hand(tiny_components):
    objective = make_objective(tiny_components, lambda_lpips=0.5, timestep_threshold=1000)
    images, masks, persons, faces = scene(2)
    pred, target, noisy = torch.randn(3, 2, 4, 8, 8).unbind(0)
    out = objective(tiny_components.vae, pred, target, noisy, torch.tensor([1, 1]), images, masks, persons, faces,
                    hand_boxes=HANDS)  # fmt: skip
    assert out.hand is None and out.per_sample["w_hand"].tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"lambda_hand": -0.1}, ">= 0"),
        ({"lambda_lpips": 0.2, "lambda_face": 0.5, "lambda_hand": 0.4}, "lambda-hand must be <= 1"),
        ({"hand_layer_weights": (1.0,)}, "hand-layer-weights"),
    ],
)
def test_hand_config_validation(kw, match):
    with pytest.raises(UserError, match=match):
        ObjectiveConfig(**kw)
