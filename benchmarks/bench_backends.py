"""TensorFlow vs PyTorch, and TensorFlow eager vs tf.function: ms per image on the CPU.

The same network in both frameworks (weights copied with tests/conftest.py's
``keras_twin``): the parity CNN (tiny_cnn, 32x32 images) and a larger CNN (five 3x3
convolutions of 32-64 channels, 64x64 images). Batch 8. Grad-CAM, and L2-CAF's fast
variant with the Adam solver for a fixed number of iterations (``tol=0``), so that both
frameworks do the same work.

Run: python benchmarks/bench_backends.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections import OrderedDict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import keras_twin, tiny_cnn
from sklearn.exceptions import ConvergenceWarning

from sklearn_caf import GradCAMExplainer, L2CAFExplainer
from sklearn_caf_tensorflow import TensorflowBackend


def larger_cnn(seed=0):
    torch.manual_seed(seed)
    widths = [3, 32, 32, 64, 64, 64]
    layers = OrderedDict()
    for i in range(5):
        layers[f"conv{i + 1}"] = nn.Conv2d(widths[i], widths[i + 1], 3, padding=1)
        layers[f"relu{i + 1}"] = nn.ReLU()
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(64, 100)
    return nn.Sequential(layers).eval()


def best_ms_per_image(fn, n, repeat):
    fn()  # warm-up: tracing, first-call allocations
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * min(times) / n


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--iters", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    warnings.simplefilter("ignore", ConvergenceWarning)
    cases = [
        ("parity CNN (tiny_cnn), 32x32", tiny_cnn(n_classes=10), 32, "relu2"),
        ("larger CNN (5 conv, 64 ch), 64x64", larger_cnn(), 64, "relu5"),
    ]
    print(
        f"torch {torch.__version__}, tensorflow {tf.__version__}, batch 8, CPU, 1 thread, "
        f"L2-CAF Adam {args.iters} iterations; best of {args.repeat}, ms/image"
    )
    print("| network | method | PyTorch | TF tf.function | TF eager | TF/PyTorch |")
    print("|---|---|---|---|---|---|")
    for label, net, size, layer in cases:
        X = np.random.default_rng(0).standard_normal((8, 3, size, size)).astype(np.float32)
        Xk = np.ascontiguousarray(X.transpose(0, 2, 3, 1))
        keras_net = keras_twin(net)
        methods = {
            "Grad-CAM": lambda m, b, layer=layer: GradCAMExplainer(
                model=m, layer=layer, backend=b
            ),
            "L2-CAF fast (Adam)": lambda m, b, layer=layer: L2CAFExplainer(
                model=m, layer=layer, solver="adam", max_iter=args.iters, tol=0, backend=b
            ),
        }
        for name, make in methods.items():
            row = []
            for model, data, backend in (
                (net, X, None),
                (keras_net, Xk, TensorflowBackend()),
                (keras_net, Xk, TensorflowBackend(tf_function=False)),
            ):
                ex = make(model, backend).fit(data)
                row.append(
                    best_ms_per_image(lambda ex=ex, d=data: ex.transform(d), 8, args.repeat)
                )
            print(
                f"| {label} | {name} | {row[0]:.2f} | {row[1]:.2f} | {row[2]:.2f} | "
                f"{row[1] / row[0]:.2f}x |"
            )


if __name__ == "__main__":
    main()
