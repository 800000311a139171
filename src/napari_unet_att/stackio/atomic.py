"""Output files that appear whole or not at all, and the disk checks made before writing them.

:func:`atomic_file` writes to a hidden temporary file in the destination folder and renames it
into place only once complete (``fsync`` first, so a crash never leaves a partial file under
the real name). The checks here run before any work starts: the folder exists and is a
folder (:func:`check_folder`), the disk has room (:func:`check_space`, also used by
:mod:`.outputs` for training and denoising outputs, so every refusal for lack of room reads the same,
:func:`not_enough_space`); a failed write becomes a user-facing error (:func:`write_error`).

A temporary file's name says which process on which machine writes it (:func:`temp_name`), so
the next write of the same output removes what a killed (``SIGKILL``, power cut) writer left
(:func:`remove_stale_temps`) and never the file of a run still going.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError, ResourceError

PathLike = str | os.PathLike


def format_bytes(n: float, fine: bool = False) -> str:
    """A size for messages: ``1.23 GB`` / ``456 MB``.

    Parameters
    ----------
    n : float
        Bytes.
    fine : bool
        Finer steps for disk sizes: GB from 0.1 GB on, MB with one decimal (``0.45 GB``, ``12.3 MB``).
    """
    if fine:
        return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def free_bytes(directory: Path) -> int | None:
    """Free space on the disk holding ``directory``, or None when it cannot be told."""
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def space_needed(nbytes: int) -> int:
    """Free bytes to ask for before writing about ``nbytes``.

    1 % more for what a size estimate leaves out (file headers, metadata, the file system's
    blocks) and 1 MB more so that even a tiny file is not written onto a full disk.
    """
    return int(nbytes * 1.01) + 2**20


def not_enough_space(what: str, folder: Path, need: int, free: int | None) -> ResourceError:
    """The one refusal for a disk without room, whichever check found it.

    Parameters
    ----------
    what : str
        What was to be written (a file name, "the model and its checkpoints", "2 output file(s)").
    folder : Path
        Where it was to be written.
    need : int
        Bytes needed (margins included).
    free : int or None
        Bytes free there; None when the file system refused to reserve the space (full, or the
        user's quota is used up, which the free space does not show).
    """
    has = (f"{format_bytes(free, fine=True)} is free" if free is not None
           else "the file system refused to reserve it (full, or over quota)")
    return ResourceError(f"not enough disk space for {what} in {folder}: it needs about "
                         f"{format_bytes(need, fine=True)} and {has}; free some space there or choose another folder")


def check_space(folder: PathLike, nbytes: int, what: str) -> None:
    """Refuse to write about ``nbytes`` (``what``) into ``folder`` when its disk lacks room.

    Parameters
    ----------
    folder : str or path-like
        The folder written into (it must exist).
    nbytes : int
        The size of what is written; :func:`space_needed` adds the margins.
    what : str
        Names it in the message.

    Raises
    ------
    ResourceError
        Less free space than :func:`space_needed`; nothing is refused when the free space cannot
        be told.
    """
    folder = Path(folder)
    free = free_bytes(folder)
    need = space_needed(nbytes)
    if free is not None and free < need:
        raise not_enough_space(what, folder, need, free)


def reserve_blocks(tmp: Path, path: Path) -> None:
    """Allocate the disk blocks of ``tmp`` (to become ``path``) now.

    Writing to a sparse memory map on a full disk kills the process (SIGBUS); reserving first
    turns that into a :class:`ResourceError` before any work.
    """
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            raise not_enough_space(path.name, path.parent, os.fstat(fd).st_size, None) from None
        # EINVAL / EOPNOTSUPP: the filesystem cannot preallocate; go on without
    finally:
        os.close(fd)


def write_error(exc: OSError, path: Path) -> Exception:
    """The user-facing error for an ``OSError`` while writing ``path``: disk full, not writable, other."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return ResourceError(f"the disk is full (or over quota) while writing {path}; nothing was written. "
                             "Free some space or choose another folder.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return InputError(f"cannot write {path}: the folder {path.parent} is not writable ({exc.strerror})")
    return InputError(f"could not write {path}: {exc.strerror or exc}")


# What follows ".NAME." in a temporary file's name: host id, process id, random part.
_OWNER = re.compile(r"(?P<host>[0-9a-f]{8})\.(?P<pid>[0-9]+)\.[0-9a-f]{8}\.tmp")


def host_id() -> str:
    """Eight hex digits naming this machine (a process id only means something on its own host)."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def temp_name(path: Path) -> Path:
    """A hidden, unique name beside ``path`` naming its writer: ``.NAME.HOST.PID.RANDOM.tmp``.

    Beside ``path``, so on the same file system and ``os.replace`` is an atomic rename; the host
    and process ids let a later run tell a file left by a killed writer from one being written.
    """
    return path.with_name(f".{path.name}.{host_id()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine; True when that cannot be told (a file is never
    taken from a live writer)."""
    if pid <= 0 or pid == os.getpid() or os.name != "posix":  # on Windows os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, run by another user
        return True
    return True


def remove_stale_temps(path: PathLike) -> list[Path]:
    """Remove the temporary files (or zarr folders) that killed writers of ``path`` left beside it.

    Only names made by :func:`temp_name` for ``path`` whose process has ended on this machine:
    the file of a live run (another run writing the same output, or this process) is kept, and
    so is one written from another machine, whose processes cannot be seen from here. Files of
    older versions (no owner in the name) are left alone. Called before the disk-space checks:
    a killed run's output-sized file must not make the next run refuse for lack of room.

    Returns
    -------
    list of Path
        What was removed.
    """
    path = Path(path)
    prefix, host, removed = f".{path.name}.", host_id(), []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:  # a missing or unreadable folder: the checks that follow say so
        return removed
    for entry in entries:
        owner = _OWNER.fullmatch(entry.name[len(prefix):]) if entry.name.startswith(prefix) else None
        if owner is None or owner["host"] != host or process_alive(int(owner["pid"])):
            continue
        with contextlib.suppress(OSError):  # gone already (another run cleaned it) or not ours to remove
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def prepare_output(path: Path, nbytes: int) -> None:
    """Before writing ``nbytes`` to ``path``: its folder exists, killed writers' temporary files of
    ``path`` are gone (they would count against the free space), and the disk has room."""
    check_folder(path)
    remove_stale_temps(path)
    check_space(path.parent, nbytes, path.name)


def check_folder(path: Path) -> None:
    """Refuse an output path whose folder is missing or is a file, saying which."""
    folder = path.parent
    if folder.is_dir():
        return
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            raise InputError(f"cannot write {path}: {parent} is a file, not a folder")
    raise InputError(f"cannot write {path}: the folder {folder} does not exist")


def _fsync(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX only; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: PathLike) -> Iterator[Path]:
    """Yield a reserved temporary file beside ``path``; rename it into place if the block succeeds.

    Temporary files that killed writers of ``path`` left are removed first (:func:`remove_stale_temps`).
    On any error the temporary file is removed and an existing ``path`` is left untouched;
    an ``OSError`` becomes :class:`ResourceError` (disk full) or :class:`InputError`.
    """
    path = Path(path)
    check_folder(path)
    remove_stale_temps(path)
    tmp = temp_name(path)
    try:
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # honours the umask
    except OSError as exc:
        raise write_error(exc, path) from None
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise write_error(exc, path) from exc
        raise
    _fsync_dir(path.parent)


def replace_dir(tmp: Path, path: Path) -> None:
    """Move a finished folder (a zarr array) into place, replacing an old one only after the move succeeds."""
    old = None
    if path.exists():
        old = temp_name(path)
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except OSError:
        if old is not None:
            os.replace(old, path)
        raise
    if old is not None and old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    elif old is not None:
        old.unlink()
