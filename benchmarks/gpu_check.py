"""GPU readiness of the explainers: CUDA maps equal to the CPU's, host syncs, timings.

Run from the repository root on a machine with a CUDA GPU:

    python benchmarks/gpu_check.py                  # torch (EfficientNet-Lite0) + Keras
    python benchmarks/gpu_check.py --device cpu     # the same checks, CPU as the device

Where no GPU is visible it says so and exits with status 0 (``--device cpu`` runs every
check with the CPU standing in for the GPU, to test the script itself). Exit status 1
when a check fails.

Checks, per backend, explainer, layer and objective:

* maps on the device equal the CPU's: Grad-CAM heatmaps within ``GRADCAM_ATOL`` (cuDNN and
  TF32 reorder sums); L2-CAF maps (iterative solvers amplify rounding differences along
  their path) with Pearson correlation at least ``L2CAF_MIN_CORR`` on every image;
* host synchronisations during one L2-CAF call on CUDA, counted with
  ``torch.cuda.set_sync_debug_mode("warn")`` (each synchronising op warns once per call
  site and call): Adam synchronises only at its convergence checks (every ``check_every``
  iterations), L-BFGS once per head evaluation (its line search reads the losses), the
  default on non-affine heads (``solver="auto"``, i.e. ``"adam-lbfgs"``) at Adam's
  checks of its warm start (iterations 1, 51, 101, every 10th for the map-settling test,
  and 150 or 100), then once per L-BFGS evaluation;
* timings: ms per image and ratios to Grad-CAM at the same layer on the same device.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np

# Rounding alone moves maps this far: on the CPU, changing only the accumulation order
# (channels-last vs the default layout, benchmarks/bench_fold.py) flips one ReLU6 unit of
# one photo at `_blocks.10` (Grad-CAM heatmap difference 2.1e-3) and moves the default
# L2-CAF maps to correlation 0.9967. A device bug moves them by orders of magnitude more.
GRADCAM_ATOL = 5e-3
L2CAF_MIN_CORR = 0.99
LAYERS = ("_head_relu6", "_blocks.10", "_blocks.15")


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.abs(a).reshape(len(a), -1)
    b = np.abs(b).reshape(len(b), -1)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1), 1.0)


def _timed(fn, repeats: int = 2):
    out = fn()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def _count_syncs(torch, fn) -> int | None:
    """Synchronising CUDA ops during ``fn()``; None where there is no CUDA."""
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def check_torch(device: str, batch: int, layers: tuple[str, ...]) -> list[str]:
    import torch

    from sklearn_caf import GradCAMExplainer, L2CAFExplainer
    from sklearn_caf.datasets import load_sample_photos
    from sklearn_caf_torch.pretrained import efficientnet_lite0, preprocess_efficientnet_lite

    if device.startswith("cuda"):
        # Equal maps need equal arithmetic: no TF32 in the comparison runs.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    _, photos = load_sample_photos()
    x = preprocess_efficientnet_lite(photos)
    X = np.concatenate([x] * (batch // len(x) + 1))[:batch]
    net = efficientnet_lite0()
    failures = []
    print(f"\n## torch {torch.__version__}, EfficientNet-Lite0, batch {batch}, device {device}\n")
    print(
        "| explainer | layer | objective | solver | ms/image | ratio to Grad-CAM | "
        "max diff / min corr vs CPU | host syncs (iterations) |"
    )
    print("|---|---|---|---|---:|---:|---:|---|")
    for layer in layers:
        grad = {
            d: GradCAMExplainer(model=net, layer=layer, batch_size=batch, device=d)
            for d in ("cpu", device)
        }
        ref = grad["cpu"].fit(X[:1]).transform(X)
        on_device = grad[device].fit(X[:1])
        out, t_grad = _timed(lambda g=on_device: g.transform(X))
        diff = float(np.abs(out - ref).max())
        if diff > GRADCAM_ATOL:
            failures.append(f"Grad-CAM at {layer}: max diff {diff:.2g} > {GRADCAM_ATOL}")
        print(
            f"| Grad-CAM | `{layer}` | class | - | {1000 * t_grad / batch:.1f} | 1.00 | "
            f"{diff:.1e} | - |"
        )
        for objective in ("class-oblivious", "class-specific"):
            for solver in ("auto", "adam", "lbfgs"):
                params = dict(layer=layer, objective=objective, solver=solver, batch_size=batch)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cpu = L2CAFExplainer(model=net, device="cpu", **params).fit(X[:1])
                    dev = L2CAFExplainer(model=net, device=device, **params).fit(X[:1])
                    ref = cpu.explain(X)
                    e, t = _timed(lambda dev=dev: dev.explain(X))
                    syncs = _count_syncs(torch, lambda dev=dev: dev.explain(X))
                corr = float(_corr(e.maps, ref.maps).min())
                if corr < L2CAF_MIN_CORR:
                    failures.append(f"L2-CAF {objective} {solver} at {layer}: min corr {corr:.4f}")
                iters = f"{int(e.n_iter.min())}-{int(e.n_iter.max())}"
                sync = "n/a (no CUDA)" if syncs is None else str(syncs)
                print(
                    f"| L2-CAF | `{layer}` | {objective} | {dev.solver_} | "
                    f"{1000 * t / batch:.1f} | {t / t_grad:.2f} | {corr:.4f} | "
                    f"{sync} ({iters}) |"
                )
    return failures


def check_tensorflow(device: str) -> list[str]:
    """A small Keras CNN (a batch norm and a ReLU after the layer): Grad-CAM and L2-CAF."""
    import tensorflow as tf
    from tensorflow import keras

    from sklearn_caf import GradCAMExplainer, L2CAFExplainer

    tf_device = "gpu" if device.startswith("cuda") else "cpu"
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((32, 32, 3))
    h = L.ReLU(name="relu1")(L.Conv2D(16, 3, padding="same", name="conv1")(inp))
    h = L.Conv2D(32, 3, padding="same", name="conv2")(h)
    h = L.ReLU(name="relu2")(L.BatchNormalization(name="bn")(h))
    out = L.Dense(10, name="fc")(L.GlobalAveragePooling2D(name="pool")(h))
    model = keras.Model(inp, out)
    X = np.random.default_rng(0).standard_normal((8, 32, 32, 3)).astype(np.float32)
    failures = []
    print(f"\n## TensorFlow {tf.__version__}, small Keras CNN, device {tf_device}\n")
    for layer in ("relu1", "relu2"):
        ref = GradCAMExplainer(model=model, layer=layer, device="cpu").fit(X).transform(X)
        got = GradCAMExplainer(model=model, layer=layer, device=tf_device).fit(X).transform(X)
        diff = float(np.abs(got - ref).max())
        print(f"- Grad-CAM `{layer}`: max diff vs CPU {diff:.1e}")
        if diff > GRADCAM_ATOL:
            failures.append(f"Keras Grad-CAM at {layer}: max diff {diff:.2g}")
        for objective in ("class-oblivious", "class-specific"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                params = dict(model=model, layer=layer, objective=objective)
                ref = L2CAFExplainer(device="cpu", **params).fit(X).explain(X)
                est = L2CAFExplainer(device=tf_device, **params).fit(X)
                e = est.explain(X)
            corr = float(_corr(e.maps, ref.maps).min())
            print(f"- L2-CAF `{layer}` {objective} ({est.solver_}): min corr vs CPU {corr:.4f}")
            if corr < L2CAF_MIN_CORR:
                failures.append(f"Keras L2-CAF {objective} at {layer}: min corr {corr:.4f}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="'cuda', 'cuda:N' or 'cpu'")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--layers", nargs="*", default=list(LAYERS))
    parser.add_argument("--skip-tensorflow", action="store_true")
    args = parser.parse_args()

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "No CUDA GPU is visible to torch: nothing to check (run with --device cpu to "
            "exercise the script with the CPU as the device)."
        )
        return 0
    failures = check_torch(args.device, args.batch, tuple(args.layers))
    if not args.skip_tensorflow:
        try:
            import tensorflow as tf
        except ImportError:
            print("\nTensorFlow is not installed: Keras checks skipped.")
        else:
            if args.device.startswith("cuda") and not tf.config.list_physical_devices("GPU"):
                print("\nNo GPU is visible to TensorFlow: Keras checks skipped.")
            else:
                failures += check_tensorflow(args.device)
    print()
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("All checks passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
