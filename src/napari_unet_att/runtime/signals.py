"""One policy for SIGINT (Ctrl-C) and SIGTERM (``kill``, ``timeout``, Slurm) during long jobs.

Python turns SIGINT into ``KeyboardInterrupt`` wherever the main thread happens to be, and
SIGTERM by default kills the process without running any cleanup: a training run loses what it
learnt since its last periodic checkpoint and an atomic write leaves its hidden temporary file.
:class:`StopSignals` handles both alike:

- a job that can stop at a safe point (training: end the current step, save, return) registers
  a *cooperative* stop with :meth:`StopSignals.cooperate`; the first signal only asks it to stop;
- otherwise, or on a second signal (the user insists), :class:`Interrupted` is raised, a
  ``KeyboardInterrupt`` so every ``finally`` / atomic write cleans up on the way out.

The process then exits with the shell's convention, ``128 + signal number`` (130 for SIGINT,
143 for SIGTERM). Handlers can only be installed from the main thread; elsewhere (a napari
worker, a thread in a test) the context manager does nothing and the widgets' own Stop applies.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    """The shell's exit status of a process ended by ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Interrupted(KeyboardInterrupt):
    """The job was stopped by a signal; ``exit_code`` is what the process should return."""

    def __init__(self, signum: int, detail: str = "no partial output was kept") -> None:
        super().__init__(f"interrupted by {signal_name(signum)}; {detail}")
        self.signum = int(signum)
        self.exit_code = exit_code(signum)
        self.detail = detail


class StopSignals:
    """Context manager that routes SIGINT / SIGTERM into a cooperative stop or :class:`Interrupted`.

    Examples
    --------
    >>> with StopSignals() as sig:                       # doctest: +SKIP
    ...     sig.cooperate(trainer.request_stop)          # True: the loop will stop and save
    ...     model = run_to_end(trainer.run())
    ... if sig.signum is not None:
    ...     sys.exit(exit_code(sig.signum))
    """

    def __init__(self) -> None:
        self.signum: int | None = None  # the first signal received
        self._stop: Callable[[], bool] | None = None
        self._previous: dict[int, Any] = {}

    def cooperate(self, stop: Callable[[], bool] | None) -> None:
        """Call ``stop()`` on the first signal instead of raising; it returns False if it cannot
        stop cleanly at this moment (then :class:`Interrupted` is raised after all)."""
        self._stop = stop

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else exit_code(self.signum)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if first and self._stop is not None and self._stop():
            return
        raise Interrupted(signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


__all__ = ["HANDLED", "Interrupted", "StopSignals", "exit_code", "signal_name"]
