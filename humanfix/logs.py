"""Library messages that say nothing to a humanfix user, filtered at their source logger.

diffusers warns "There are modules in X that should be kept in float32: []" each time a model is cast with
``.to(dtype)``, with an empty list for every SD 1.5 model: two or three times per run, about nothing. The
filter drops that empty-list message only; a non-empty list still shows.
"""

from __future__ import annotations

import logging

EMPTY_FP32_MODULES = "that should be kept in float32: []"


class _DropMessages(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def quiet_known_noise() -> None:
    """Install the filters (idempotent). Loggers keep filters whatever level a library sets later."""
    logger = logging.getLogger("diffusers.models.modeling_utils")
    if not any(isinstance(f, _DropMessages) for f in logger.filters):
        logger.addFilter(_DropMessages((EMPTY_FP32_MODULES,)))
