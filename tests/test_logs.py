"""diffusers' empty "kept in float32: []" warning is filtered; a non-empty one still shows."""

import logging

from humanfix.logs import _DropMessages, quiet_known_noise


class Keep(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_empty_fp32_module_warning_is_dropped():
    quiet_known_noise()
    quiet_known_noise()  # idempotent
    logger = logging.getLogger("diffusers.models.modeling_utils")
    assert sum(isinstance(f, _DropMessages) for f in logger.filters) == 1
    keep = Keep()
    logger.addHandler(keep)
    level = logger.level
    logger.setLevel(logging.WARNING)  # the CLI quiets "diffusers" to ERROR: an earlier CLI test must not hide these
    try:
        logger.warning("There are modules in UNet2DConditionModel that should be kept in float32: []. Casting …")
        logger.warning("There are modules in Foo that should be kept in float32: ['norm']. Casting …")
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
    assert len(keep.messages) == 1 and "['norm']" in keep.messages[0]
