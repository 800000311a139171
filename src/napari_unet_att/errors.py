"""Exceptions that carry a message meant for the user.

The CLI prints ``str(exc)`` of a :class:`UserError` as one line (no traceback) and the
widgets show it as a napari notification; anything else is a bug and is shown in full.
"""

from __future__ import annotations


class UserError(Exception):
    """Base class: a problem with what the user gave us, with a message that says what to do."""


class InputError(UserError, ValueError):
    """The input data is not what the operation needs (shape, dtype, values, file)."""


class LayoutError(InputError):
    """Readable data whose layout or dtype is not a ``(T, Y, X)`` intensity time-lapse.

    Wrong axes, too few frames, several non-spatial axes, an unsupported dtype: the data
    themselves can still be shown, only not denoised. The message is ``"SUBJECT: DETAIL"``;
    ``subject`` names the data (``'file NAME'``, ``'array'``) and ``detail`` says what was
    found and what is expected, so a caller can name the data its own way.
    """

    def __init__(self, subject: str, detail: str) -> None:
        super().__init__(f"{subject}: {detail}")
        self.subject = subject
        self.detail = detail

    def __reduce__(self) -> tuple:  # picklable with both parts (the default passes the message only)
        return (type(self), (self.subject, self.detail))


class ChannelChoiceError(LayoutError):
    """Data with several channels (or RGB samples) and no channel chosen.

    ``axis`` is the index of the channel (or sample) axis in the data as given, so that a front
    end can say how to take one channel with its own tools (napari splits some axes, not others).
    """

    def __init__(self, subject: str, detail: str, axis: int | None = None) -> None:
        super().__init__(subject, detail)
        self.axis = axis

    def __reduce__(self) -> tuple:
        return (type(self), (self.subject, self.detail, self.axis))


class CheckpointError(UserError, ValueError):
    """A checkpoint file is missing, truncated, foreign, unsafe or of an unknown version."""


class TrainingStateError(CheckpointError):
    """A checkpoint's training state is damaged or does not fit the run: it cannot be resumed.

    Its weights may still be good, so a front end can say how to start a new run from them
    instead, in its own terms (see :mod:`napari_unet_att.wording`).
    """


class ResourceError(UserError, RuntimeError):
    """A request would exceed the memory or disk that is available."""


class InputWarning(UserWarning):
    """An input was used with a choice the user did not make (e.g. the first of several image series).

    The CLI prints it as one line; napari shows it as a warning notification.
    """
