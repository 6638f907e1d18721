"""The one exception type for mistakes a user can make (bad path, bad value, missing weights).

The CLI prints its message as one line on stderr and exits with code 2, without a traceback.
Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem the user can fix; the message says what and how."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`UserError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)
