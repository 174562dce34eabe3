"""The heatmaps' resize, and what it costs the model's next pass (CPU).

Every explainer ends by resizing its maps to the input's size. Done as a product with an
interpolation matrix (``np.tensordot``, the implementation before session 4, kept below as
the baseline), it runs in OpenBLAS's threads, which keep spinning for a while after the
call and take the cores from torch's next pass: Grad-CAM called in a loop slows down,
although the resize itself takes a few ms. Done with gathers and weighted sums
(``sklearn_caf._explainers._heatmaps.resize_maps``), it never enters OpenBLAS.

This times, in one run, the resize alone and Grad-CAM on EfficientNet-Lite0 called in a
loop, with each implementation in turn. Run from the repository root:

    MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000 \\
        python benchmarks/bench_resize.py
"""

from __future__ import annotations

import argparse
import platform
from unittest import mock

import numpy as np
import torch
from bench_explainers import _images, _time  # same photos, same timing rule

import sklearn_caf._explainers._heatmaps as heatmaps
from sklearn_caf import GradCAMExplainer
from sklearn_caf_torch.pretrained import efficientnet_lite0


def _matrix(n_in: int, n_out: int) -> np.ndarray:
    lo, hi, frac = heatmaps._linear_taps(n_in, n_out)
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), lo), 1 - frac)
    np.add.at(weights, (np.arange(n_out), hi), frac)
    return weights


def resize_with_blas(maps: np.ndarray, size) -> np.ndarray:
    """The baseline: separable resize as products with interpolation matrices."""
    out = np.asarray(maps, dtype=np.float64)
    for i, n_out in enumerate(size):
        axis = out.ndim - len(size) + i
        if out.shape[axis] != n_out:
            weights = _matrix(out.shape[axis], n_out)
            out = np.moveaxis(np.tensordot(out, weights, axes=([axis], [1])), -1, axis)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--layers", default="_blocks.10,_head_relu6")
    args = parser.parse_args()
    net = efficientnet_lite0()
    X = _images(args.batch)
    maps = np.random.default_rng(0).random((args.batch, 1, 14, 14))
    assert np.allclose(heatmaps.resize_maps(maps, (224, 224)), resize_with_blas(maps, (224, 224)))
    print(
        f"EfficientNet-Lite0, batch {args.batch}, 224x224, CPU "
        f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
        f"torch {torch.__version__}, numpy {np.__version__}; best of {args.repeats}. "
        f"ms per batch (ratio to the matrix-product resize).\n"
    )
    print("| measured | matrix product (before) | gathers (now) |")
    print("|---|---:|---:|")
    times = {}
    for name, fn in (("before", resize_with_blas), ("now", heatmaps.resize_maps)):
        times[name] = _time(lambda fn=fn: fn(maps, (224, 224)), args.repeats)
    print(_row("resize of 14x14 maps to 224x224 alone", times))
    for layer in args.layers.split(","):
        explainer = GradCAMExplainer(model=net, layer=layer).fit(X[:1])
        times = {}
        for name, fn in (("before", resize_with_blas), ("now", heatmaps.resize_maps)):
            with mock.patch.object(heatmaps, "resize_maps", fn):
                times[name] = _time(lambda e=explainer: e.transform(X), args.repeats)
        print(_row(f"Grad-CAM at `{layer}`, called in a loop", times))


def _row(label: str, times: dict) -> str:
    base = times["before"]
    cells = " | ".join(f"{1000 * t:.1f} ({t / base:.2f})" for t in times.values())
    return f"| {label} | {cells} |"


if __name__ == "__main__":
    main()
