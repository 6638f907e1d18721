"""Built-in prompt sets for ``generate --prompt-set NAME``.

``hands``: prompts whose hands are large in the frame (gestures, holding objects, two hands, hands near a
face, hands at work), for ``evaluate --hands``: MediaPipe's palm detector needs hands it can see (on whole
scenes, hands of 15-40 px are mostly missed; docs/evaluate.md has the measured rates).
"""

from __future__ import annotations

from humanfix.errors import UserError

HANDS = (
    "close-up photo of a person's open hand, palm facing the camera, fingers spread, plain background",
    "close-up photo of a hand giving a thumbs up, studio lighting",
    "close-up photo of a hand making a peace sign, natural light",
    "close-up photo of a hand pointing with the index finger, neutral background",
    "close-up photo of a hand making an OK sign, shallow depth of field",
    "close-up photo of a hand clenched into a fist, side view, soft light",
    "close-up photo of a hand waving hello, bright daylight",
    "close-up photo of a hand holding a coffee mug, cafe table",
    "close-up photo of a hand holding a smartphone, thumb on the screen",
    "close-up photo of a hand holding a pencil and writing on paper",
    "close-up photo of a hand holding a red apple, kitchen background",
    "close-up photo of a hand holding a glass of water",
    "close-up photo of two hands cupped together holding water",
    "photo of two hands clasped together on a table, close-up",
    "close-up photo of two people shaking hands, business attire",
    "photo of two hands forming a heart shape, close-up",
    "close-up photo of two hands typing on a laptop keyboard",
    "portrait photo of a woman resting her chin on her hand, hand clearly visible",
    "portrait photo of a man with his hand on his cheek, thinking, close-up",
    "portrait photo of a person covering their mouth with one hand, close-up",
    "portrait photo of a smiling woman waving at the camera, hand near her face",
    "close-up photo of hands kneading bread dough on a wooden table",
    "close-up photo of a carpenter's hands holding a hammer",
    "close-up photo of a gardener's hands planting a seedling in soil",
    "close-up photo of a pianist's hands on the piano keys",
    "close-up photo of hands playing an acoustic guitar, fretting a chord",
    "close-up photo of a chef's hands chopping vegetables with a knife",
    "close-up photo of hands sewing with a needle and thread",
)
PROMPT_SETS = {"hands": HANDS}


def prompt_set(name: str | None) -> tuple[str, ...]:
    """The prompts of a built-in set (none for ``None``); an unknown name is a :class:`UserError`."""
    if name is None:
        return ()
    if name not in PROMPT_SETS:
        raise UserError(f"--prompt-set {name!r}: choose one of {', '.join(PROMPT_SETS)}")
    return PROMPT_SETS[name]
