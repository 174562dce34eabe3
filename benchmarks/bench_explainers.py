"""Speed of the explainers on EfficientNet-Lite0 (CPU), as ratios to our Grad-CAM.

Run from the repository root (repeatable CPU timings need the malloc settings):

    MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000 \
        python benchmarks/bench_explainers.py

It prints a Markdown table (paste it into benchmarks/README.md) of ms/image for our
Grad-CAM, Captum's LayerGradCam, and L2-CAF (fast: both objectives, both solvers; vanilla),
each with its ratio to our Grad-CAM at the same layer measured in the same run, and how
well each L2-CAF setting matches a 1000-iteration run of the authors' optimizer
(``solver="adam", tol=0``; Pearson correlation of the maps at the layer's resolution:
worst image and mean). Intermediate layers (``--layers``, heads that are not affine in
the filter) get a row for the authors' Adam (``solver="adam"``: the default before issue
12), the defaults (``solver="auto"``) and ``solver="lbfgs"``, with the number of constant
maps and the warnings raised. ``--quick`` runs only those rows and the last layer's
default.

The 1000-iteration reference maps cost minutes per layer and objective on a CPU: they are
computed once and kept in ``benchmarks/.cache`` (ignored by git), under a name that
includes everything they depend on (layer, objective, batch, the images, the versions of
torch and sklearn-caf); ``--no-cache`` recomputes them.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import sklearn_caf
from sklearn_caf import GradCAMExplainer, L2CAFExplainer
from sklearn_caf.datasets import load_sample_photos
from sklearn_caf_torch.pretrained import (
    EFFICIENTNET_LITE0_LAYER,
    EFFICIENTNET_LITE0_PREACTIVATION_LAYER,
    efficientnet_lite0,
    preprocess_efficientnet_lite,
)


def _images(n: int) -> np.ndarray:
    _, photos = load_sample_photos()
    x = preprocess_efficientnet_lite(photos)
    return np.concatenate([x] * (n // len(x) + 1))[:n]


def _time(fn, repeats: int, warm_up: bool = True) -> float:
    if warm_up:
        fn()  # allocations, lazy initialisation
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _correlation(maps: np.ndarray, reference: np.ndarray) -> np.ndarray:
    a = np.abs(maps).reshape(len(maps), -1)
    b = np.abs(reference).reshape(len(reference), -1)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


CACHE = Path(__file__).resolve().parent / ".cache"


def _reference(net, X: np.ndarray, layer: str, objective: str, use_cache: bool) -> np.ndarray:
    """Maps of the authors' Adam run for 1000 iterations (``tol=0``): the optimum each row's
    maps are compared with. Cached on disk: each costs 1000 head evaluations."""
    key = hashlib.sha256(X.tobytes())
    key.update(f"{layer}|{objective}|{torch.__version__}|{sklearn_caf.__version__}".encode())
    path = CACHE / f"reference-{layer}-{objective}-{len(X)}-{key.hexdigest()[:16]}.npy"
    if use_cache and path.exists():
        return np.load(path)
    maps = (
        L2CAFExplainer(
            model=net,
            layer=layer,
            objective=objective,
            solver="adam",
            max_iter=1000,
            tol=0,
            batch_size=len(X),
        )
        .fit(X[:1])
        .explain(X)
        .maps
    )
    CACHE.mkdir(exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    np.save(path, maps)
    return maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--layers",
        nargs="*",
        default=["_blocks.10", "_blocks.12", "_blocks.15"],
        help="intermediate layers to explain (heads that are not affine in the filter)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only the rows of the intermediate layers and the last layer's default",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="recompute the 1000-iteration reference maps"
    )
    parser.add_argument(
        "--objectives",
        nargs="*",
        default=["class-oblivious", "class-specific"],
        choices=["class-oblivious", "class-specific"],
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # ConvergenceWarning of the capped reference runs

    net = efficientnet_lite0()
    layer, pre = EFFICIENTNET_LITE0_LAYER, EFFICIENTNET_LITE0_PREACTIVATION_LAYER
    X = _images(args.batch)
    print(
        f"EfficientNet-Lite0, Grad-CAM at `{layer}`, batch {args.batch}, 224x224, CPU "
        f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
        f"torch {torch.__version__}; best of {args.repeats} runs.\n"
    )
    print("| method | ms/image | ratio to our Grad-CAM at the same layer | notes |")
    print("|---|---:|---:|---|", flush=True)

    class _Rows(list):  # each row printed as soon as it is measured (long runs)
        def append(self, row: tuple[str, float, float, str]) -> None:
            name, t, t_base, note = row
            print(f"| {name} | {1000 * t / len(X):.1f} | {t / t_base:.2f} | {note} |", flush=True)
            super().append(row)

    rows = _Rows()

    ours = GradCAMExplainer(model=net, layer=layer, batch_size=args.batch).fit(X[:1])
    t_ours = _time(lambda: ours.transform(X), args.repeats)
    rows.append(("Grad-CAM (ours)", t_ours, t_ours, ""))

    from captum.attr import LayerGradCam

    def captum_run():
        x = torch.as_tensor(X)
        with torch.no_grad():
            target = net(x).argmax(1)
        return LayerGradCam(net, net.get_submodule(layer)).attribute(
            x, target=target, relu_attributions=True
        )

    rows.append(("Grad-CAM (Captum LayerGradCam)", _time(captum_run, args.repeats), t_ours, ""))

    settings = [
        # (layer, label, params, repeats); the 1000-iteration Adam run at the same layer is
        # the reference each row's maps are compared with.
        (layer, "fast, solver='auto' (exact here)", {}, args.repeats),
        (layer, "fast, Adam (defaults)", {"solver": "adam"}, args.repeats),
        (layer, "vanilla, Adam", {"variant": "vanilla"}, 1),
        (pre, "fast, Adam (defaults)", {"solver": "adam"}, args.repeats),
    ]
    if args.quick:
        settings = settings[:1]
    for at in args.layers:  # intermediate layers: heads that are not affine in the filter
        before = "fast, solver='adam' (the default before issue 12)"
        settings.append((at, before, {"solver": "adam"}, 1))  # minutes per run
        settings.append((at, "fast, defaults", {}, args.repeats))
        settings.append((at, "fast, solver='lbfgs'", {"solver": "lbfgs"}, args.repeats))
    references: dict = {}
    for objective in args.objectives:
        for at, label, params, repeats in settings:
            if (at, objective) not in references:
                references[at, objective] = _reference(net, X, at, objective, not args.no_cache)
            est = L2CAFExplainer(
                model=net, layer=at, objective=objective, batch_size=args.batch, **params
            ).fit(X[:1])
            # Grad-CAM at the same layer: the baseline of this row's ratio.
            base = GradCAMExplainer(model=net, layer=at, batch_size=args.batch).fit(X[:1])
            t_base = t_ours if at == layer else _time(lambda b=base: b.transform(X), repeats)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                last = []
                # Runs of minutes (repeats=1) need no warm-up: the reference run at the
                # same layer has already warmed up this split's kernels.
                run = lambda est=est, last=last: last.append(est.explain(X))  # noqa: E731
                t = _time(run, repeats, warm_up=repeats > 1)
                e = last[-1]
            corr = _correlation(e.maps, references[at, objective])
            flat = np.abs(e.maps).reshape(len(e.maps), -1)
            constant = int((flat.max(1) - flat.min(1) <= 1e-6 * flat.max(1)).sum())
            solver = getattr(est, "solver_", "?")
            note = (
                f"`{at}`; {solver}; iterations {int(e.n_iter.min())}-{int(e.n_iter.max())}; "
                f"corr. with 1000 it.: min {corr.min():.4f}, mean {corr.mean():.4f}"
            )
            if constant:
                note += f"; **{constant} constant maps**"
            if caught:
                names = sorted({w.category.__name__ for w in caught})
                note += f"; warned ({', '.join(names)})"
            rows.append((f"L2-CAF {objective}, {label}", t, t_base, note))


if __name__ == "__main__":
    main()
