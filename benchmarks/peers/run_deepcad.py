"""Time DeepCAD-RT's own inference on a CPU (side-by-side speed comparison; see shared PEERS.md).

Run with the peer's own interpreter, never the project's::

    /work/peers/deepcad-venv/bin/python benchmarks/peers/run_deepcad.py --frames 400 --size 128

(the venv: ``pip install "torch==2.13.0" "deepcad==1.2.0" "numpy<2" "setuptools<81"``).

What is timed is DeepCAD-RT 1.2.0's ``testing_class.test()`` unchanged: its tiling
(``test_preprocess_chooseOne``: 64 x 64 x 64 test patches, overlap factor 0.5), its
``testset`` / DataLoader, its network (``Network_3D_Unet``, f = 16, random weights saved as its
``.pth``: speed does not depend on the weights), its hard-crop stitching and its TIFF output.
On a CPU its unconditional ``.cuda()`` calls are made no-ops here (the installed package is
not edited). Its test loop runs with autograd on (no ``no_grad``), as shipped; ``--no-grad``
also times it inside ``torch.no_grad()``, the fairer network-only number.

Prints one line per timed run and a final JSON line (``RESULT {...}``) for the report script.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import tifffile
import torch


def neutralise_cuda() -> None:
    """Make ``.cuda()`` return the object itself (DeepCAD-RT calls it on a CPU-only machine)."""
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]


def make_stack(frames: int, size: int, photons: float = 2.0, seed: int = 0) -> np.ndarray:
    """Same recipe as ``benchmarks/bench_speed.make_stack``: Poisson counts on a smooth pattern, uint16."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    pattern = 1.0 + 0.5 * np.sin(yy / 9.0) * np.cos(xx / 13.0)
    lam = photons * pattern[None] * (1.0 + 0.2 * np.sin(np.arange(frames) / 20.0))[:, None, None]
    return (rng.poisson(lam) * 50 + 100).astype(np.uint16)


def count_patches(frames: int, size: int, patch: int, overlap: float) -> int:
    """Number of test patches DeepCAD-RT's ``test_preprocess_chooseOne`` cuts (its own formula)."""
    gap = int(patch * (1 - overlap))
    n_xy = int(np.ceil((size - patch + gap) / gap))
    n_t = int(np.ceil((frames - patch + gap) / gap))
    return n_xy * n_xy * n_t


def main() -> None:
    ap = argparse.ArgumentParser(description="time DeepCAD-RT inference on a CPU")
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--patch", type=int, default=64, help="test patch (t = y = x); smaller than the frame")
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-grad", action="store_true", help="also time the test loop inside torch.no_grad()")
    ap.add_argument("--tiff", help="use this (T, Y, X) TIFF instead of a generated stack")
    args = ap.parse_args()

    neutralise_cuda()
    from deepcad.network import Network_3D_Unet  # noqa: E402 - after the patch, as the package imports torch
    from deepcad.test_collection import testing_class

    # OMP_NUM_THREADS wins (so a benchmark can give the peer the same threads as ours), else every usable core
    threads = int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="deepcad-bench-") as tmp:
        data_dir, model_root, out_dir = (os.path.join(tmp, d) for d in ("data", "pth", "results"))
        os.makedirs(data_dir)
        os.makedirs(os.path.join(model_root, "random"))
        stack = tifffile.imread(args.tiff) if args.tiff else make_stack(args.frames, args.size)
        tifffile.imwrite(os.path.join(data_dir, "stack.tif"), stack)
        torch.manual_seed(0)
        net = Network_3D_Unet(in_channels=1, out_channels=1, f_maps=16, final_sigmoid=True)
        torch.save(net.state_dict(), os.path.join(model_root, "random", "E_01_Iter_0001.pth"))
        params = {
            "patch_x": args.patch, "patch_y": args.patch, "patch_t": args.patch, "overlap_factor": args.overlap,
            "scale_factor": 1, "test_datasize": stack.shape[0], "datasets_path": data_dir, "pth_dir": model_root,
            "denoise_model": "random", "output_dir": out_dir, "fmap": 16, "GPU": "0", "num_workers": 0,
            "visualize_images_per_epoch": False,
        }
        tester = testing_class(params)
        tester.prepare_file()
        tester.read_modellist()
        tester.read_imglist()
        tester.initialize_network()
        tester.distribute_GPU()
        n_patches = count_patches(stack.shape[0], stack.shape[1], args.patch, args.overlap)
        results = {"frames": int(stack.shape[0]), "shape": list(stack.shape), "patch": args.patch,
                   "overlap": args.overlap, "n_patches": n_patches, "threads": torch.get_num_threads(),
                   "torch": torch.__version__, "load_avg": os.getloadavg()}
        variants = [("as_shipped", torch.enable_grad)] + ([("no_grad", torch.no_grad)] if args.no_grad else [])
        for name, ctx in variants:
            times = []
            for _ in range(max(1, args.repeats)):
                t0 = time.perf_counter()
                with ctx():
                    tester.test()  # tiling, forward passes, stitching, TIFF write: its whole inference
                times.append(time.perf_counter() - t0)
                print(f"\n{name}: {stack.shape[0] / times[-1]:.2f} frames/s ({times[-1]:.1f} s, "
                      f"{n_patches} patches of {args.patch}^3)", flush=True)
            results[name] = {"seconds": min(times), "all_seconds": times,
                             "frames_per_s": stack.shape[0] / min(times)}
        results["load_avg_after"] = os.getloadavg()
    print("RESULT " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
