"""Every output location is checked before any work starts.

A training run that cannot write its model, or a batch whose results overwrite each other or
their own inputs, must fail at once, not after hours of work. The CLI and the widgets call the
same functions:

- :func:`check_train_out` - the training folder: not a file, not a file name (``x.png``),
  creatable, writable, with room for the checkpoints;
- :class:`OutputLock` - one training run per folder at a time (an OS lock, released by the
  kernel when the process dies, so a killed run never leaves a stale lock behind);
- :func:`check_denoise_outputs` - one output per input: none is an input, no two are the same
  file, an existing file is refused unless ``overwrite``, the folders are writable and the disk
  has room for all of them together (once the temporary files of killed earlier runs writing
  them are removed: :func:`~.atomic.remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from .atomic import check_space, remove_stale_temps, temp_name, write_error

PathLike = str | os.PathLike

LOCK_NAME = ".napari-unet-att.lock"
# Names that say "file": a folder called model.pt or x.png is never what the user meant.
FILE_SUFFIXES = frozenset({".pt", ".pth", ".ckpt", ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy", ".npz",
                           ".zarr", ".h5", ".json", ".yaml", ".txt", ".zip", ".csv"})


def same_file(a: Path, b: Path) -> bool:
    """True if ``a`` and ``b`` are one file (same path after resolving links, or the same inode)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def ensure_writable_folder(folder: PathLike, what: str, file: Path | None = None) -> Path:
    """Create ``folder`` if needed and prove it writable by creating and removing a hidden file.

    ``file``, when given, is the file to be written there, named in the errors.
    """
    folder = Path(folder)
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            subject = f"write {file}" if file is not None else f"use {folder} as {what}"
            raise InputError(f"cannot {subject}: {parent} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {what} {folder}: {exc.strerror or exc}") from None
    remove_stale_temps(folder / "write-probe")  # probes of runs killed in the instant they existed
    probe = temp_name(folder / "write-probe")
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        probe.unlink()
    except OSError as exc:
        raise write_error(exc, file if file is not None else folder / "x") from None
    return folder


# -- training ------------------------------------------------------------------------------
def checkpoint_bytes(n_parameters: int) -> int:
    """Size of one checkpoint with training state: weights + Adam's two moments, float32, + slack."""
    return 3 * 4 * int(n_parameters) + 4 * 2**20


def check_train_out(out_dir: PathLike, n_parameters: int | None = None) -> Path:
    """Check the folder a training run writes ``model.pt`` / ``checkpoint-last.pt`` into.

    Parameters
    ----------
    out_dir : str or path-like
        The folder (created if missing).
    n_parameters : int, optional
        The network's size; with it the disk must have room for the two checkpoints and the
        temporary file of an atomic save.

    Raises
    ------
    InputError
        A file, a file-like name, or a folder that cannot be created or written.
    ResourceError
        Not enough free disk space.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is an existing file; training writes model.pt and checkpoint-last.pt "
                         "into a folder: give a folder name (e.g. runs/exp1)")
    if not out.exists() and out.suffix.lower() in FILE_SUFFIXES:
        raise InputError(f"--out {out} looks like a file name; training writes model.pt and checkpoint-last.pt "
                         f"into a folder: give a folder name (e.g. {out.with_suffix('')})")
    ensure_writable_folder(out, "the training output folder")
    if n_parameters is not None:
        check_space(out, 3 * checkpoint_bytes(n_parameters), "the model and its checkpoints")
    return out


class OutputLock:
    """An exclusive, non-blocking lock on a folder, held while a run writes into it.

    Uses ``flock`` on a hidden file in the folder: the kernel releases it when the process ends,
    however it ends. The file is removed on release; a waiter that locked the removed file
    notices (its inode is no longer the path's) and retries on the new one.
    """

    def __init__(self, folder: PathLike, what: str = "training run") -> None:
        self.path = Path(folder) / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; concurrent runs are not detected there
            return self
        for _ in range(10):
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owner = _read_owner(fd)
                os.close(fd)
                raise InputError(f"another {self.what}{owner} is writing into {self.path.parent}; wait for it to "
                                 "finish or choose another --out") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return self
            os.close(fd)  # the holder removed the file as we locked it: lock the new one
        raise InputError(f"could not lock {self.path.parent}: its lock file keeps changing")

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # before unlocking: nobody can lock this inode and think it is current
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_owner(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip() or "x")
        return f" (process {pid})"
    return ""


# -- denoising -----------------------------------------------------------------------------
def check_denoise_outputs(
    inputs: Sequence[PathLike],
    outputs: Sequence[PathLike],
    overwrite: bool = True,
    nbytes: Sequence[int] | None = None,
) -> list[Path]:
    """Check the outputs of one denoising run (one per input) before anything is read or written.

    Parameters
    ----------
    inputs, outputs : sequences of paths
        ``outputs[i]`` receives the result of ``inputs[i]``.
    overwrite : bool
        Replace existing output files; when False an existing output is refused.
    nbytes : sequence of int, optional
        The size of each output; the disk must have room for all of them (each is written
        beside its final name, so one file system per folder).

    Returns
    -------
    list of Path
        The outputs, their folders created.

    Raises
    ------
    InputError
        An output that is one of the inputs, two outputs that are one file, an existing file
        without ``overwrite``, a folder that cannot be created or written.
    ResourceError
        Not enough free disk space.
    """
    ins = [Path(p) for p in inputs]
    outs = [Path(p) for p in outputs]
    for i, out in enumerate(outs):
        for src in ins:
            if same_file(out, src):
                raise InputError(f"the output {out} would overwrite the input {src}; choose another output path")
        for j in range(i):
            if same_file(out, outs[j]):
                raise InputError(f"inputs {ins[j]} and {ins[i]} would both be written to {out}; denoise them into "
                                 "separate folders, or rename one of them")
        if out.exists() and not overwrite:
            raise InputError(f"{out} already exists; pass --overwrite to replace it, or choose another output")
        if out.is_dir() and out.suffix.lower() != ".zarr":
            raise InputError(f"the output {out} is a folder; expected a .tif file name")
    folders: dict[Path, int] = {}
    for k, out in enumerate(outs):
        ensure_writable_folder(out.parent, "the output folder", file=out)
        remove_stale_temps(out)  # what a killed earlier run left is free space for this one
        folders[out.parent] = folders.get(out.parent, 0) + (int(nbytes[k]) if nbytes is not None else 0)
    what = outs[0].name if len(outs) == 1 else f"{len(outs)} output file(s)"
    for folder, need in folders.items():
        if need:
            check_space(folder, need, what)
    return outs


def output_nbytes(stack: Any, float32: bool, shape: Sequence[int] | None = None) -> int:
    """Bytes of the denoised copy of ``stack``: float32 or the input's dtype, of ``shape`` (default the stack's; a
    scan's merged output has half its rows)."""
    import numpy as np

    item = 4 if float32 else np.dtype(stack.dtype).itemsize
    return int(np.prod(stack.shape if shape is None else shape)) * item


__all__ = ["LOCK_NAME", "OutputLock", "check_denoise_outputs", "check_train_out",
           "checkpoint_bytes", "ensure_writable_folder", "output_nbytes", "same_file"]
