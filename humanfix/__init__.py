"""humanfix: teach Stable Diffusion 1.5 to draw people.

A ControlNet branch is trained on top of a frozen SD 1.5 under a mask-aware perceptual loss
(LPIPS on person regions, face-embedding features on face crops) mixed with the usual
latent-diffusion loss. See docs/objective.md.
"""

__version__ = "0.1.0"
