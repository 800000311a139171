"""Reading a model file without ever running code from it, and saying what is wrong with a bad one.

:func:`safe_load` is ``torch.load(weights_only=True)``: a file crafted to run code when
unpickled is refused, never executed. When torch refuses or fails, the file's first bytes
are read (never unpickled) to name the problem in one sentence: the Python globals an unsafe
pickle would import (found by scanning its opcodes), a truncated zip, a plain pickle, a text
file, or anything else.
"""

from __future__ import annotations

import io as _pyio
import os
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..stackio import looks_like_text

#: Extension of this package's checkpoints (named in messages; ``checkpoint.py`` writes them).
CHECKPOINT_EXT = ".pt"
_SCAN_BYTES = 64 * 2**20  # pickle streams precede tensor data: enough to find every global

PathLike = str | os.PathLike


def safe_load(path: PathLike) -> Any:
    """``torch.load(weights_only=True)`` with a :class:`CheckpointError` naming the problem."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model file not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; expected a model file ({CHECKPOINT_EXT} or .pth)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); expected a model file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing foreign pickles
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # torch raises many types for bad files; diagnose from the bytes instead
        raise _diagnose(path, exc) from None


def _diagnose(path: Path, exc: Exception) -> CheckpointError:
    """The error to raise for a file torch could not load with ``exc``, found from its first bytes."""
    with open(path, "rb") as fh:
        data = fh.read(_SCAN_BYTES)
    unsafe = _unsafe_globals(path, data)
    if unsafe:
        return CheckpointError(
            f"{path} contains executable code / Python objects ({', '.join(unsafe[:5])}) and was NOT loaded. "
            "Only plain weight files are accepted; if you trust its origin, re-save just the weights "
            "(torch.save(model.state_dict(), ...)) and import that."
        )
    if data.startswith(b"PK\x03\x04"):
        return CheckpointError(f"{path} is a truncated or corrupted PyTorch file ({error_summary(exc)}); "
                               "it may not have been saved completely or was damaged in transfer")
    if _is_plain_pickle(data):
        return CheckpointError(f"{path} is a plain Python pickle, not a PyTorch checkpoint; expected a model file "
                               f"saved by napari-unet-att ({CHECKPOINT_EXT}) or a reference tool's .pth")
    if looks_like_text(data[:4096]):
        return CheckpointError(f"{path} is a text file, not a model; expected a {CHECKPOINT_EXT} / .pth weights file")
    return CheckpointError(f"{path} is not a PyTorch checkpoint, or it is corrupted (starts with {data[:8]!r}; "
                           f"{error_summary(exc)})")


def error_summary(exc: Exception) -> str:
    """``Type: first sentence`` of an exception (torch's messages run to paragraphs)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # weights-only refusals bury the actual reason ("Unsupported operand 192") in later lines
    reason = next((ln for ln in lines if ln.lower().startswith(("unsupported", "trying to load"))), None)
    text = reason or (lines[0] if lines else "")
    text = text.split(". ")[0][:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# Globals found in legacy (pre-zip) torch files that the weights-only unpickler accepts.
_LEGACY_SAFE = ("torch.", "collections.OrderedDict", "_codecs.encode", "builtins.set", "builtins.bytearray")


def _unsafe_globals(path: Path, data: bytes) -> list[str]:
    """Globals referenced by the file's pickle(s) that ``weights_only`` refuses (never executed)."""
    if zipfile.is_zipfile(path):
        try:  # torch's own list: exactly what weights_only refused
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:
            return []
    return [n for n in _pickle_globals(data) if not n.startswith(_LEGACY_SAFE)]


def _pickle_globals(data: bytes, max_pickles: int = 6) -> list[str]:
    """Every ``module.name`` a pickle stream would import, found without executing it.

    Legacy (pre-zip) torch files are several pickles in a row, so up to ``max_pickles`` are read.
    """
    found: list[str] = []
    stream = _pyio.BytesIO(data)
    for _ in range(max_pickles):
        if stream.tell() >= len(data):
            break
        strings: list[str] = []
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str) and ("UNICODE" in op.name or "STRING" in op.name):
                    strings.append(str(arg))
        except Exception:  # not (or no longer) a pickle: stop scanning
            break
    return found


def _is_plain_pickle(data: bytes) -> bool:
    """A complete pickle stream without globals (a pickled dict/list of plain values)."""
    try:
        ops = list(pickletools.genops(_pyio.BytesIO(data)))
    except Exception:
        return False
    return bool(ops) and ops[-1][0].name == "STOP"


__all__ = [
    "CHECKPOINT_EXT",
    "error_summary",
    "safe_load",
]
