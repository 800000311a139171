"""Exceptions that carry a message meant for the user.

The CLI prints ``str(exc)`` of a :class:`UserError` as one line (no traceback) and the
widgets show it as a napari notification; anything else is a bug and is shown in full.
"""

from __future__ import annotations


class UserError(Exception):
    """Base class: a problem with what the user gave us, with a message that says what to do."""


class InputError(UserError, ValueError):
    """The input data is not what the operation needs (shape, dtype, values, file)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint file is missing, truncated, foreign, unsafe or of an unknown version."""


class ResourceError(UserError, RuntimeError):
    """A request would exceed the memory or disk that is available."""


class Cancelled(UserError):
    """The user stopped the run."""
