"""napari worker glue: run an engine generator in a thread, cancel it, wait for it, show its progress.

Nothing here trains, denoises or measures; it only carries the engine's generators and
events across napari's :mod:`napari.qt.threading` workers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
from qtpy.QtCore import QCoreApplication, QElapsedTimer


class WorkerFailure(Exception):
    """An engine error carried out of a napari generator worker (see :func:`drain`).

    napari's ``GeneratorWorker`` takes a ``RuntimeError`` raised by its generator for "the
    worker was deleted": it only warns, and emits neither ``errored`` nor ``finished``, so
    the user would get no message and a dock stuck in its busy state. The engine's
    :class:`~napari_unet_att.errors.ResourceError` (out of memory, full disk) and torch's
    own errors are ``RuntimeError`` subclasses, so :func:`drain` wraps them in this.
    """

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def drain(gen: Any, cancel: threading.Event) -> Generator[Any, None, Any]:
    """Run an engine generator inside a napari worker, with a cooperative cancel flag.

    When ``cancel`` is set, the engine generator is closed *in the worker thread* (its
    ``finally`` blocks release tiles, temporary files and prefetch threads right away) and
    None is returned instead of a result.
    """
    try:
        while not cancel.is_set():
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            except RuntimeError as exc:  # napari would swallow it: see WorkerFailure
                raise WorkerFailure(exc) from exc
            yield event
        return None
    finally:
        gen.close()


def start_worker(worker: Any) -> Any:
    """Start a napari worker and mark it busy until its ``finished`` signal; show its input warnings.

    ``worker.is_running`` is False until the thread pool actually runs the job (napari
    queues the start while an event loop runs), so "is it done?" is answered by
    :func:`worker_busy` instead, which is True from this call until ``finished``.
    """
    worker.unet_att_busy = True

    def _done(*_: Any) -> None:
        worker.unet_att_busy = False

    worker.finished.connect(_done)
    worker.warned.connect(relay_input_warning)
    worker.start()
    return worker


def relay_input_warning(args: tuple) -> None:
    """Show an engine :class:`~napari_unet_att.errors.InputWarning` raised in a worker as a napari notification.

    Workers catch the warnings of their thread and only emit them (``warned``): napari's own relay
    is not connected in every version, and a note such as "series 0 of 3 is read" would be lost.
    Other warnings stay as napari handles them. napari's manager shows each message once.
    """
    from napari.utils.notifications import notification_manager

    from ..errors import InputWarning

    if len(args) >= 4 and isinstance(args[1], type) and issubclass(args[1], InputWarning):
        notification_manager.receive_warning(*args)


def run_function(func: Callable[..., Any], *args: Any, returned: Callable[[Any], Any],
                 errored: Callable[[BaseException], Any], finished: Callable[[], Any]) -> Any:
    """Run ``func(*args)`` in a started napari worker wired to the three callbacks; returns the worker."""
    from napari.qt.threading import create_worker

    worker = create_worker(func, *args, _ignore_errors=True)
    worker.returned.connect(returned)
    worker.errored.connect(errored)
    worker.finished.connect(finished)
    return start_worker(worker)


def run_generator(gen: Any, cancel: threading.Event, yielded: Callable[[Any], Any],
                  returned: Callable[[Any], Any], errored: Callable[[BaseException], Any],
                  finished: Callable[[], Any]) -> Any:
    """Drain the engine generator ``gen`` in a started napari worker (see :func:`drain`); returns the worker.

    The generator is closed when ``cancel`` is set and also when napari aborts the worker
    itself (the Activity panel's cancel, and every busy task when the window closes):
    ``worker.quit()`` drops the generator at its next ``yield`` without closing it, so the
    engine's ``finally`` blocks (threads joined, the model saved) would wait for garbage
    collection. The generator is suspended at that ``yield`` when ``aborted`` is delivered,
    so closing it then is safe.
    """
    from napari.qt.threading import create_worker

    worker = create_worker(drain, gen, cancel, _ignore_errors=True)
    worker.aborted.connect(gen.close)
    worker.yielded.connect(yielded)
    worker.returned.connect(returned)
    worker.errored.connect(errored)
    worker.finished.connect(finished)
    return start_worker(worker)


def worker_busy(worker: Any) -> bool:
    """True while a worker started by :func:`start_worker` has not finished."""
    return worker is not None and bool(getattr(worker, "unet_att_busy", False) or worker.is_running)


def stop_worker(worker: Any, timeout_s: float = 30.0, quit: bool = False) -> bool:
    """Wait (processing Qt events) until a worker has finished; with ``quit``, ask it to abort first.

    The callers first ask the engine to end (``Trainer.stop``, the cancel flag of :func:`drain`),
    which runs the engine generator's ``finally`` (sampler and prefetch threads joined, the
    model saved). ``quit`` instead makes napari drop the generator at its next ``yield``
    *without closing it*: those threads would outlive the dock until garbage collection.

    Returns True when the worker is no longer running. Events are processed while waiting
    because the worker's ``finished`` signal is delivered through the event loop.
    """
    if worker is None:
        return True
    try:
        if quit:
            worker.quit()
    except RuntimeError:  # underlying Qt object already deleted
        return True
    timer = QElapsedTimer()
    timer.start()
    while worker_busy(worker) and timer.elapsed() < timeout_s * 1000:
        QCoreApplication.processEvents()
        time.sleep(0.01)
    return not worker_busy(worker)


class TaskProgress:
    """A napari progress bar (the Activity panel) for one run; every method is safe when closed."""

    def __init__(self) -> None:
        self._bar: Any = None

    def open(self, total: int, desc: str) -> None:
        from napari.utils import progress

        self.close()
        self._bar = progress(total=total, desc=desc)

    def advance_to(self, done: int, total: int | None = None, desc: str | None = None) -> None:
        """Move the bar to ``done`` (of ``total`` when given)."""
        bar = self._bar  # updating it may process events (and finish the run) re-entrantly
        if bar is None:
            return
        if desc is not None:
            bar.set_description(desc)
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(max(0, done - bar.n))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def format_seconds(s: float | None) -> str:
    """``'1:05'`` / ``'1:02:03'`` / ``'?'``."""
    if s is None or not np.isfinite(s):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
