"""``generate --prompt-set``: the built-in sets and their errors."""

from __future__ import annotations

import pytest

from humanfix.errors import UserError
from humanfix.generate import GenerateConfig
from humanfix.generation.prompt_sets import HANDS, prompt_set


def test_hands_set_has_enough_distinct_prompts_about_hands():
    assert len(HANDS) >= 24 and len(set(HANDS)) == len(HANDS)
    assert all("hand" in p for p in HANDS)
    assert prompt_set("hands") == HANDS and prompt_set(None) == ()


def test_unknown_set_is_a_user_error_before_any_model_loads():
    with pytest.raises(UserError, match="choose one of hands"):
        GenerateConfig(prompt_set="feet")
    assert GenerateConfig(prompt_set="hands").prompt_set == "hands"
