"""Train DeepCAD-RT 1.2.0 on one recording for a fixed CPU wall-clock budget, then denoise it (see shared PEERS.md).

Run with the peer's own interpreter, never the project's::

    /work/peers/deepcad-venv/bin/python benchmarks/peers/train_deepcad.py --input in.tif --seconds 600 --out den.tif

(the venv: ``pip install "torch==2.13.0" "deepcad==1.2.0" "numpy<2" "setuptools<81"``).

Training is DeepCAD-RT's ``training_class`` unchanged: its patch list (``train_preprocess_lessMemoryMulStacks``,
32 x 64 x 64 patches of interleaved frames, the whole-stack mean subtracted, ``scale_factor`` 1), its ``trainset``
augmentation, its network (``Network_3D_Unet``, f = 16), Adam (b1 0.5) and its 0.5 L1 + 0.5 L2 loss; batch 1 (it
forces batch = number of GPUs). The budget is enforced from this runner: ``DataLoader`` inside its training module
is replaced by one that raises once ``--seconds`` have passed (checked before every batch, so the last step may end
up to one step late), and the final weights are saved from memory. Denoising is its ``testing_class.test()``
unchanged (64 x 64 x 64 test patches, overlap 0.5, as ``run_deepcad.py``), with autograd on as shipped
(``--no-grad``: inside ``torch.no_grad()``, same output, faster).

CPU workarounds, all from this runner (the installed package is not edited): ``.cuda()`` returns ``self``; its
per-epoch save (an ONNX export through ``model.module``, DataParallel only) becomes a plain state-dict save; test
patches are cast to float32 (numpy 2 would make them float64).

Intensity scale: its test code adds the stack mean back to every patch and multiplies it by
``sqrt(sum(raw patch) / sum(output patch))``, so the output is in the input's units (no offset to undo). Its TIFF,
however, is cast to the input dtype: uint16 is clipped and *truncated* (about -0.5 count on average and quantised),
a float input becomes int32. ``--out`` therefore holds the float32 stack it stitched just before that cast
(captured through its display hook); ``RESULT`` reports ``shipped_minus_float`` (mean of its TIFF minus ours).

Prints the iterations done, training and inference seconds, and a final JSON line ``RESULT {...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_deepcad import neutralise_cuda  # noqa: E402 - same folder, run with the peer's interpreter


class BudgetExceeded(Exception):
    """Raised by the timed loader when the training budget is spent."""


def timed_loader_class(deadline: list[float], counter: list[int]) -> type:
    """A ``DataLoader`` stand-in that counts the batches it hands out and raises once ``deadline[0]`` has passed."""
    from torch.utils.data import DataLoader

    class TimedLoader(DataLoader):
        def __iter__(self) -> Iterator:
            for batch in super().__iter__():
                if time.perf_counter() >= deadline[0]:
                    raise BudgetExceeded
                counter[0] += 1
                yield batch

    return TimedLoader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", required=True, help="(T, Y, X) TIFF, uint16 or float")
    ap.add_argument("--out", required=True, help="denoised (T, Y, X) float32 TIFF")
    ap.add_argument("--seconds", type=float, required=True, help="wall-clock training budget")
    ap.add_argument("--lr", type=float, default=5e-4, help="Adam lr (its demo: 5e-5, tuned for ~60k GPU steps)")
    ap.add_argument("--patch-t", type=int, default=32, help="training patch frames (input and target each)")
    ap.add_argument("--patch-xy", type=int, default=64)
    ap.add_argument("--test-patch", type=int, default=64, help="test patch (t = y = x); smaller than the frame")
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--train-datasets-size", type=int, default=2000, help="its patch-count target per epoch")
    ap.add_argument("--fmap", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-grad", action="store_true", help="test inside torch.no_grad() (it ships without)")
    args = ap.parse_args()

    load_start = os.getloadavg()  # 1-min load before the run: another busy process skews every timing
    neutralise_cuda()
    import deepcad.test_collection as dtest
    import deepcad.train_collection as dtrain

    random.seed(args.seed)  # its augmentation draws from Python's random; shuffle and init from torch
    torch.manual_seed(args.seed)
    # OMP_NUM_THREADS wins (so a benchmark can give the peer the same threads as ours), else every usable core
    threads = int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))
    torch.set_num_threads(threads)
    stack = tifffile.imread(args.input)
    if stack.ndim != 3:
        raise SystemExit(f"expected a (T, Y, X) stack, got {stack.shape}")

    deadline, counter = [float("inf")], [0]
    dtrain.DataLoader = timed_loader_class(deadline, counter)
    captured: dict[str, np.ndarray] = {}

    class Float32Testset(dtest.testset):
        def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
            patch, coordinate = super().__getitem__(index)
            return patch.float(), coordinate

    dtest.testset = Float32Testset
    dtest.test_img_display = lambda img, **_: captured.__setitem__("float", img.copy())

    with tempfile.TemporaryDirectory(prefix="deepcad-train-") as tmp:
        data_dir = os.path.join(tmp, "data")
        os.makedirs(data_dir)
        tifffile.imwrite(os.path.join(data_dir, "stack.tif"), stack)
        common = {"overlap_factor": args.overlap, "scale_factor": 1, "datasets_path": data_dir, "fmap": args.fmap,
                  "GPU": "0", "num_workers": 0, "visualize_images_per_epoch": False}
        trainer = dtrain.training_class({
            **common, "patch_x": args.patch_xy, "patch_y": args.patch_xy, "patch_t": args.patch_t, "lr": args.lr,
            "n_epochs": 10**6, "train_datasets_size": args.train_datasets_size, "select_img_num": stack.shape[0],
            "pth_dir": os.path.join(tmp, "pth"), "onnx_dir": os.path.join(tmp, "onnx"),
            "output_dir": os.path.join(tmp, "train_results"), "save_test_images_per_epoch": False})

        def save_model(epoch: int, iteration: int) -> None:  # its epoch save, without the ONNX export
            name = f"E_{epoch + 1:02d}_Iter_{iteration + 1:04d}.pth"
            torch.save(trainer.local_model.state_dict(), os.path.join(trainer.pth_path, name))

        trainer.save_model = save_model
        trainer.prepare_file()
        try:  # its temporal gap: (T - 2 patch_t) / (size / patches per frame - 1), floored; 0 divides by zero
            trainer.train_preprocess_lessMemoryMulStacks()
        except ZeroDivisionError:
            raise SystemExit("its temporal patch gap is 0 (or undefined): change --train-datasets-size") from None
        trainer.initialize_network()
        trainer.distribute_GPU()
        t0 = time.perf_counter()
        deadline[0] = t0 + args.seconds
        try:
            trainer.train()
        except BudgetExceeded:
            pass
        t_train = time.perf_counter() - t0
        print(f"\ntraining: {counter[0]} iterations in {t_train:.1f} s "
              f"({len(trainer.name_list)} patches per epoch)", flush=True)

        model_root = os.path.join(tmp, "models")
        os.makedirs(os.path.join(model_root, "trained"))
        torch.save(trainer.local_model.state_dict(), os.path.join(model_root, "trained", "final.pth"))
        tester = dtest.testing_class({
            **common, "patch_x": args.test_patch, "patch_y": args.test_patch, "patch_t": args.test_patch,
            "test_datasize": stack.shape[0], "pth_dir": model_root, "denoise_model": "trained",
            "output_dir": os.path.join(tmp, "results"), "visualize_images_per_epoch": True})
        tester.prepare_file()
        tester.read_modellist()
        tester.read_imglist()
        tester.initialize_network()
        tester.distribute_GPU()
        t1 = time.perf_counter()
        with torch.no_grad() if args.no_grad else torch.enable_grad():
            tester.test()
        t_infer = time.perf_counter() - t1
        shipped = tifffile.imread(next(Path(tester.output_path).rglob("*_output.tif")))

    den = captured["float"].astype(np.float32)
    tifffile.imwrite(args.out, den)
    print(f"inference: {t_infer:.1f} s ({stack.shape[0] / t_infer:.2f} frames/s)", flush=True)
    result = {"input": args.input, "out": args.out, "shape": list(stack.shape), "iterations": counter[0],
              "train_s": round(t_train, 2), "infer_s": round(t_infer, 2),
              "infer_fps": round(stack.shape[0] / t_infer, 2), "lr": args.lr, "patch_t": args.patch_t,
              "patch_xy": args.patch_xy, "test_patch": args.test_patch, "overlap": args.overlap,
              "no_grad": args.no_grad, "patches_per_epoch": len(trainer.name_list), "threads": torch.get_num_threads(),
              "input_mean": float(stack.mean()), "output_mean": float(den.mean()),
              "shipped_dtype": str(shipped.dtype),
              "shipped_minus_float": float(np.mean(shipped - den.astype(np.float64))),
              "torch": torch.__version__, "numpy": np.__version__,
              "load_avg_start": load_start, "load_avg_end": os.getloadavg()}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
