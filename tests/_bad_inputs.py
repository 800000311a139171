"""The bad-input corpus: one definition for the tests and for ``scripts/robustness_report.py``.

``tests/test_robustness.py`` (CLI and Python API), ``tests/test_widget_bad_inputs.py`` (the
napari widgets, reader and writer) and ``scripts/robustness_report.py`` (the table in
``docs/robustness.md``) all build their inputs with :func:`write_inputs` and read what to run
and what to expect from :data:`CASES`, so the three can never drift apart.

Each :class:`Case` has

* a CLI command line (``argv``; ``{name}`` is a file of :func:`write_inputs`, ``{out}`` the
  output folder), or none when the case only exists in the GUI (saving a layer);
* the message fragments the user must see (empty: a supported variant that must work);
* how the widget test reaches it (:data:`WIDGET_PATHS`), or None when no widget can;
* an optional simulated fault (:func:`install_fault`), e.g. a full disk.

The module lives in ``tests/`` because it is test data; the report script puts this folder
on ``sys.path`` (there is no package to install it from, and it must not ship in the wheel).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

#: CLI options that make training cases refuse (or finish) within a second.
FAST = ("--steps", "1", "--patch-t", "4", "--patch-xy", "16")
GOOD_SHAPE = (12, 16, 16)

#: How ``tests/test_widget_bad_inputs.py`` drives a case (the value of :attr:`Case.widget`).
WIDGET_PATHS = {
    "denoise": "open the input with the plugin reader, press Denoise in the denoise dock",
    "train": "open the input with the plugin reader, choose mode / patch in the training dock, press Start",
    "open": "File > Open with the plugin reader",
    "load": "Load model… in both docks",
    "resume": "training dock, Advanced > Resume, press Start",
    "stream": "denoise dock, stream to the output file, press Denoise",
    "save_layer": "File > Save Selected Layer(s) with the plugin writer",
    "save_model": "training dock, Save model…",
}


# ----------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------
def make_arrays() -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """Every input stack: ``id -> (array, extra tifffile.imwrite arguments)``. Deterministic."""
    rng = np.random.default_rng(0)
    good = rng.poisson(100, GOOD_SHAPE).astype(np.uint16)
    rgb = rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    nan = good.astype(np.float32)
    nan[3, 4, 5] = np.nan
    inf = good.astype(np.float32)
    inf[7, 1, 2] = np.inf
    return {
        "good": (good, {}),
        "image2d": (good[0], {}),
        "rgb": (rgb, {"photometric": "rgb", "metadata": None}),
        "channels2": (np.stack([good[:6], good[6:]], axis=1), {"metadata": {"axes": "TCYX"}}),
        "frames1": (good[:1], {}),
        "frames2": (good[:2], {}),
        "frames6": (good[:6], {}),
        "rows8": (good[:, :8, :8], {}),
        "nan": (nan, {}),
        "inf": (inf, {}),
        "const": (np.full(GOOD_SHAPE, 7, np.uint16), {}),
        "bool": (good > 100, {}),
        "int8": ((good % 100).astype(np.int8), {}),
        "int32": (good.astype(np.int32) * 1000, {}),
        "float64": (good.astype(np.float64) / 3, {}),
        "bigendian": (good.astype(">u2"), {"byteorder": ">"}),
        "complex": (good.astype(np.complex64), {}),
        "square_mirror": (good, {}),  # (T, N, N): not a bidirectional (T, 2N, N) scan
        "odd_rows": (rng.poisson(100, (12, 33, 16)).astype(np.uint16), {}),
    }


def write_stacks(folder: Path) -> dict[str, Path]:
    """The stacks of :func:`make_arrays` as TIFFs, plus ``.tif`` files that are not TIFFs,
    a tiny model (``model``: f=4, one 12x16x16 tile in about a second) and a plain file
    (``blocker``) to put an output folder under."""
    folder = Path(folder)
    files: dict[str, Path] = {}
    for name, (data, kw) in make_arrays().items():
        files[name] = folder / f"{name}.tif"
        kw = {"metadata": {"axes": "TYX"} if data.ndim == 3 else None, **kw}
        tifffile.imwrite(files[name], data, **kw)
    files["text"] = folder / "notes.tif"
    files["text"].write_text("these are my notes, not an image\n")
    raw = files["good"].read_bytes()
    files["truncated"] = folder / "truncated.tif"
    files["truncated"].write_bytes(raw[: len(raw) // 2])
    files["missing"] = folder / "nope.tif"
    files["blocker"] = folder / "blocker"
    files["blocker"].write_text("a file, not a folder")
    files["model"] = write_model(folder / "model.pt")
    return files


def write_model(path: Path) -> Path:
    """A tiny untrained UNet-Att checkpoint (deterministic weights)."""
    import torch

    from napari_unet_att.model import checkpoint as ck
    from napari_unet_att.model.denoiser import Denoiser
    from napari_unet_att.model.networks import build_network
    from napari_unet_att.model.normalization import Normalization

    torch.manual_seed(0)
    den = Denoiser(build_network("unet_att", 4).eval(), "unet_att", 4, "fast", "temporal",
                   Normalization(100.0, 10.0), train_shape=GOOD_SHAPE)
    return ck.save_checkpoint(path, den)


def write_bad_models(folder: Path, model: Path, tiff: Path) -> dict[str, Path]:
    """Bad checkpoints made from a good one (``model``) and a TIFF: keys start with ``m_``."""
    import torch

    from napari_unet_att.model import checkpoint as ck
    from napari_unet_att.model.networks import build_network

    folder = Path(folder)
    data = Path(model).read_bytes()
    raw = torch.load(model, weights_only=True)
    raw.pop("checksum", None)  # edited below: as a file without a checksum (older versions) would be
    m = {name: folder / f"{name}.pt" for name in ("m_truncated", "m_newer", "m_arch", "m_random", "m_tiff",
                                                  "m_plain")}
    m["m_truncated"].write_bytes(data[: len(data) // 2])
    torch.save(dict(raw, format_version=ck.FORMAT_VERSION + 1), m["m_newer"])
    torch.save(dict(raw, state_dict=build_network("unet3d", 4).state_dict()), m["m_arch"])
    m["m_random"].write_bytes(np.random.default_rng(1).bytes(2048))
    m["m_tiff"].write_bytes(Path(tiff).read_bytes())
    torch.save({"weights": [1, 2, 3]}, m["m_plain"])
    m["m_hostile"] = folder / "m_hostile.pth"
    m["m_hostile"].write_bytes(hostile_pickle(str(folder / "PWNED")))
    return m


def hostile_pickle(marker: str) -> bytes:
    """A protocol-0 pickle that runs ``os.system('touch MARKER')`` when loaded naively."""
    return f"cos\nsystem\n(V touch {marker}\ntR.".encode().replace(b"(V ", b"(V")


def hostile_marker(files: dict[str, Path]) -> Path:
    """The file the hostile pickle would create if it ever ran."""
    return files["m_hostile"].parent / "PWNED"


def write_inputs(folder: Path) -> dict[str, Path]:
    """Everything: :func:`write_stacks` and :func:`write_bad_models` in one folder."""
    files = write_stacks(folder)
    files.update(write_bad_models(folder, files["model"], files["good"]))
    return files


# ----------------------------------------------------------------------------------------------
# simulated faults
# ----------------------------------------------------------------------------------------------
class FullDiskMemmap:
    """A TIFF memmap whose writes fail with ENOSPC (the disk filled up while denoising)."""

    def __init__(self, mm: np.ndarray) -> None:
        self.mm, self.shape, self.dtype = mm, mm.shape, mm.dtype

    def __setitem__(self, key: Any, value: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        self.mm.flush()


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def install_fault(name: str, setattr: Callable[[Any, str, Any], None], folder: Path) -> None:
    """Simulate a fault for the rest of the process (or test: pass ``monkeypatch.setattr``).

    Parameters
    ----------
    name : {'unwritable', 'disk_full_reserve', 'disk_full_midway'}
        ``unwritable``: creating files directly in ``folder`` fails with EACCES (done with a
        failing ``os.open``: tests often run as root, for whom ``chmod`` changes nothing).
        ``disk_full_reserve``: reserving an output's blocks fails with ENOSPC.
        ``disk_full_midway``: the disk fills up after part of a file was written: TIFF
        memory maps opened for writing, ``tifffile.imwrite`` and ``torch.save`` all fail
        half-way with ENOSPC (reading stays real).
    setattr : callable
        ``monkeypatch.setattr`` in tests, the builtin ``setattr`` in a throw-away process.
    folder : Path
        The folder the fault applies to (``unwritable`` only).
    """
    if name == "unwritable":
        real_open, locked = os.open, Path(folder).resolve()

        def deny(path: Any, *a: Any, **kw: Any) -> int:
            if Path(os.fsdecode(path)).resolve().parent == locked:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, *a, **kw)

        setattr(os, "open", deny)
    elif name == "disk_full_reserve":
        def full(fd: int, offset: int, length: int) -> None:
            raise _enospc()

        setattr(os, "posix_fallocate", full)
    elif name == "disk_full_midway":
        _install_disk_full_midway(setattr)
    else:
        raise ValueError(f"unknown fault {name!r}")


def _install_disk_full_midway(setattr: Callable[[Any, str, Any], None]) -> None:
    import torch

    real_memmap = tifffile.memmap

    def memmap(*a: Any, **kw: Any) -> Any:
        mm = real_memmap(*a, **kw)
        return mm if kw.get("mode") == "r" else FullDiskMemmap(mm)

    def imwrite(file: Any, *a: Any, **kw: Any) -> None:
        with open(file, "wb") as fh:
            fh.write(b"II*\x00" + bytes(1000))  # a header and some pixels got out, then the disk filled
        raise _enospc()

    def save(obj: Any, f: Any, *a: Any, **kw: Any) -> None:
        if hasattr(f, "write"):
            f.write(b"PK\x03\x04" + bytes(1000))
        raise _enospc()

    setattr(tifffile, "memmap", memmap)
    setattr(tifffile, "imwrite", imwrite)
    setattr(torch, "save", save)


# ----------------------------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One bad (or supported unusual) input, as the CLI and the widgets meet it."""

    id: str
    description: str
    argv: tuple[str, ...]  # CLI template; () when there is no CLI equivalent
    expected: tuple[str, ...] = ()  # message fragments (case-insensitive); () = must work
    widget: str | None = None  # a WIDGET_PATHS key, or None when no widget can meet it
    fault: str | None = None  # install_fault name, applied to the output folder

    @property
    def ok(self) -> bool:
        """True for a supported variant (it must work), False for a refusal."""
        return not self.expected

    @property
    def command(self) -> str:
        return self.argv[0] if self.argv else ""

    def cli_argv(self, files: dict[str, Path], out: Path) -> list[str]:
        """The command line with real paths."""
        names = {k: str(v) for k, v in files.items()}
        return [a.format(out=out, **names) for a in self.argv]

    def option(self, flag: str, files: dict[str, Path], out: Path) -> str | None:
        """The value of ``flag`` (e.g. ``--mode``) in :meth:`cli_argv`, or None."""
        argv = self.cli_argv(files, out)
        return argv[argv.index(flag) + 1] if flag in argv else None

    def input_path(self, files: dict[str, Path], out: Path) -> Path:
        """The stack (or, for ``info``, the checkpoint) the command reads."""
        return Path(self.cli_argv(files, out)[1])

    def model_path(self, files: dict[str, Path], out: Path) -> Path | None:
        for flag in ("--model", "--init", "--resume"):
            if (value := self.option(flag, files, out)) is not None:
                return Path(value)
        return Path(self.cli_argv(files, out)[1]) if self.command == "info" else None

    def out_path(self, files: dict[str, Path], out: Path) -> Path | None:
        value = self.option("--out", files, out)
        return None if value is None else Path(value)


def _den(name: str, *extra: str, out: str | None = None) -> tuple[str, ...]:
    return ("denoise", f"{{{name}}}", "--model", "{model}", "--out", out or f"{{out}}/{name}.tif", *extra)


def _train(name: str, *extra: str) -> tuple[str, ...]:
    return ("train", f"{{{name}}}", "--out", f"{{out}}/run_{name}", *FAST, *extra)


_HOSTILE = ("contains executable code", "NOT loaded")
_FOUND_3 = "at least 3 frames"

CASES: tuple[Case, ...] = (
    Case("image2d", "2D image", _den("image2d"), ("single 2D image", "expected a time-lapse (T, Y, X)"), "denoise"),
    Case("rgb", "RGB image without a channel choice", _den("rgb"), ("3 RGB(A) samples", "choose one"), "denoise"),
    Case("rgb_channel", "RGB image with a channel chosen", _den("rgb", "--channel", "1"), (), "denoise"),
    Case("channels2", "2-channel stack without a channel choice", _den("channels2"),
         ("2 channels", "choose one"), "denoise"),
    Case("frames1", "stack of 1 frame", _den("frames1"), ("found shape (1, 16, 16)", _FOUND_3), "denoise"),
    Case("frames2", "stack of 2 frames", _den("frames2"), ("only 2 frame(s)", _FOUND_3), "denoise"),
    Case("frames6", "6 frames for patch_t=4 (train)", _train("frames6"),
         ("needs at least 8 frames", "patch_t <= 3"), "train"),
    Case("rows8", "8x8 frames for patch_xy=16 (train)", _train("rows8"),
         ("does not fit the 8x8", "patch_xy <= 8"), "train"),
    Case("square_mirror", "mirrored mode, rows != 2 x columns", _train("square_mirror", "--mode", "mirrored"),
         ("(T, 2N, N)", "(12, 16, 16)", "temporal"), "train"),
    Case("odd_mirror", "mirrored mode, odd row count", _train("odd_rows", "--mode", "mirrored"),
         ("(T, 2N, N)", "(12, 33, 16)"), "train"),
    Case("odd_rowsplit", "rowsplit mode, odd row count", _train("odd_rows", "--mode", "rowsplit"),
         ("even number of rows", "crop one row"), "train"),
    Case("nan", "NaN values (denoise)", _den("nan"), ("NaN or Inf", "replace them"), "denoise"),
    Case("inf", "Inf values (train)", _train("inf"), ("NaN or Inf", "replace them"), "train"),
    Case("const_train", "constant image (train)", _train("const"), ("constant", "no signal or noise"), "train"),
    Case("const", "constant image (denoise)", _den("const"), (), "denoise"),
    Case("bool", "bool data", _den("bool"), ("dtype bool", "mask, not an intensity image"), "denoise"),
    Case("complex", "complex data", _den("complex"), ("complex64", "expected uint8/uint16/int16/float32"), "open"),
    Case("int8", "int8 data", _den("int8"), (), "denoise"),
    Case("int32", "int32 data", _den("int32"), (), "denoise"),
    Case("float64", "float64 data", _den("float64"), (), "denoise"),
    Case("bigendian", "big-endian uint16", _den("bigendian"), (), "denoise"),
    Case("text", ".tif that is a text file", _den("text"), ("is a text file", "expected a TIFF"), "open"),
    Case("truncated", "truncated TIFF", _den("truncated"), ("truncated or corrupted TIFF",), "open"),
    # napari's File > Open refuses a missing path itself, before any reader: no widget case
    Case("missing", "input path does not exist", _den("missing"), ("file not found", "nope.tif")),
    Case("under_file", "output folder under a file", _den("good", out="{blocker}/o.tif"), ("blocker",), "stream"),
    Case("same_file", "output = input", _den("good", out="{good}"), ("would overwrite the input",), "stream"),
    Case("unwritable", "output folder not writable", _den("good", out="{out}/o.tif"),
         ("cannot write", "not writable", "Permission denied"), "stream", "unwritable"),
    Case("disk_full_reserve", "disk full before writing", _den("good", out="{out}/o.tif"),
         ("not enough disk space", "o.tif"), "stream", "disk_full_reserve"),
    Case("disk_full_midway", "disk full while writing", _den("good", out="{out}/o.tif"),
         ("disk is full", "nothing was written"), "stream", "disk_full_midway"),
    Case("save_missing_folder", "save a layer into a folder that does not exist", (),
         ("cannot write", "does not exist"), "save_layer"),
    Case("save_disk_full", "save a layer, disk full while writing", (),
         ("disk is full", "nothing was written"), "save_layer", "disk_full_midway"),
    Case("save_model_disk_full", "save a model, disk full while writing", (),
         ("disk is full", "nothing was written"), "save_model", "disk_full_midway"),
    Case("m_truncated", "truncated checkpoint",
         ("denoise", "{good}", "--model", "{m_truncated}", "--out", "{out}/a.tif"),
         ("truncated or corrupted PyTorch file",), "load"),
    Case("m_arch", "checkpoint of another architecture", ("info", "{m_arch}"),
         ("do not match a unet_att network",), "load"),
    Case("m_newer", "checkpoint from a newer format", ("train", "{good}", "--init", "{m_newer}", "--out",
                                                       "{out}/r1", *FAST),
         ("newer napari-unet-att", "update napari-unet-att"), "load"),
    Case("m_random", "random bytes as the model", ("info", "{m_random}"), ("not a PyTorch checkpoint",), "load"),
    Case("m_tiff", "a TIFF given as the model", ("denoise", "{good}", "--model", "{m_tiff}", "--out", "{out}/b.tif"),
         ("not a PyTorch checkpoint",), "load"),
    Case("m_plain", "a torch file that is not a model", ("info", "{m_plain}"),
         ("neither a napari-unet-att checkpoint nor",), "load"),
    Case("m_missing", "model path does not exist",
         ("denoise", "{good}", "--model", "{missing}", "--out", "{out}/d.tif"), ("not found", "nope.tif"), "load"),
    Case("resume_final", "final model given to resume", ("train", "{good}", "--resume", "{model}", "--out",
                                                         "{out}/r2", *FAST),
         ("holds no training state",), "resume"),
    Case("resume_missing", "missing checkpoint given to resume", ("train", "{good}", "--resume", "{missing}",
                                                                  "--out", "{out}/r5", *FAST),
         ("not found", "nope.tif"), "resume"),
    Case("hostile_info", "pickle that runs a shell command (info)", ("info", "{m_hostile}"), _HOSTILE),
    Case("hostile_model", "pickle that runs a shell command (--model)",
         ("denoise", "{good}", "--model", "{m_hostile}", "--out", "{out}/c.tif"), _HOSTILE, "load"),
    Case("hostile_init", "pickle that runs a shell command (--init)",
         ("train", "{good}", "--init", "{m_hostile}", "--out", "{out}/r3", *FAST), _HOSTILE),
    Case("hostile_resume", "pickle that runs a shell command (--resume)",
         ("train", "{good}", "--resume", "{m_hostile}", "--out", "{out}/r4", *FAST), _HOSTILE, "resume"),
)

CASES_BY_ID = {c.id: c for c in CASES}
assert len(CASES_BY_ID) == len(CASES), "case ids must be unique"


def cases(*, widget: bool | None = None, cli: bool | None = None) -> list[Case]:
    """The cases reachable through a widget (``widget=True``) and / or the CLI (``cli=True``)."""
    out = list(CASES)
    if widget is not None:
        out = [c for c in out if (c.widget is not None) == widget]
    if cli is not None:
        out = [c for c in out if bool(c.argv) == cli]
    return out


def outputs(folder: Path) -> list[str]:
    """Every file under ``folder`` (hidden temporaries included): a refusal must leave none."""
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []
