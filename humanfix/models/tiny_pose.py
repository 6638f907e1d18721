"""Stand-ins for ``evaluate --pose``: a tiny RT-DETR person detector and a tiny ViTPose, random and seeded.

Built from configs in memory (nothing is downloaded or written), with the real classes and image
processors, so the whole ``--pose`` path runs on a CPU in seconds. Their numbers mean nothing; they are
used only on request (``--pose-weights random``) and every output says so.

The detector's classifier bias starts at a prior probability of 0.6 (``initializer_bias_prior_prob``),
so its random queries clear the default person threshold and the estimator always has boxes to work on;
the estimator's heatmap bias starts at 0.5, so its random keypoints clear the default keypoint threshold
and the plausibility score has skeletons to judge.
"""

from __future__ import annotations

from typing import Any

RANDOM_NOTICE = "random stand-in weights (--pose-weights random): the pose numbers exercise the code, nothing more"


def tiny_detector(seed: int = 0) -> tuple[Any, Any]:
    """A random ``RTDetrForObjectDetection`` (classes 0 ``person``, 1 ``bicycle``) and its processor at 64×64."""
    import torch
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessor, RTDetrResNetConfig

    backbone = RTDetrResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )  # fmt: skip
    config = RTDetrConfig(
        backbone_config=backbone, encoder_hidden_dim=16, encoder_in_channels=[16, 24, 32], encoder_ffn_dim=32,
        encoder_attention_heads=2, d_model=16, num_queries=4, decoder_in_channels=[16, 16, 16], decoder_ffn_dim=32,
        decoder_layers=1, decoder_attention_heads=2, decoder_n_points=2, num_denoising=0,
        id2label={0: "person", 1: "bicycle"}, label2id={"person": 0, "bicycle": 1}, initializer_bias_prior_prob=0.6,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RTDetrForObjectDetection(config).eval()
    return model, RTDetrImageProcessor(size={"height": 64, "width": 64})


def tiny_estimator(seed: int = 0) -> tuple[Any, Any]:
    """A random ``VitPoseForPoseEstimation`` (17 COCO keypoints) and its processor at 64×48."""
    import torch
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation, VitPoseImageProcessor

    backbone = VitPoseBackboneConfig(
        image_size=[64, 48], patch_size=[16, 16], hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        mlp_ratio=2, out_indices=[1],
    )  # fmt: skip
    config = VitPoseConfig(backbone_config=backbone, num_labels=17)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        model = VitPoseForPoseEstimation(config).eval()
        torch.nn.init.constant_(model.head.conv.bias, 0.5)  # heatmap peaks ~0.5: keypoints clear the threshold
    return model, VitPoseImageProcessor(size={"height": 64, "width": 48})
