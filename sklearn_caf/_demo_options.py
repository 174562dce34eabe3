"""What ``sklearn-caf demo``'s command line and its implementation both need.

The command line (:mod:`sklearn_caf.cli`) parses and checks the options; the demo itself
(:mod:`sklearn_caf_torch.demo`, imported only when the subcommand runs) computes and
writes. Both import this module and neither imports the other's module at import time.
Nothing heavy is imported here.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

PROG = "sklearn-caf demo"

#: How to install what the demo needs. The PyTorch backend is not on PyPI yet, so the
#: install is from a checkout (as in the README's Quickstart).
DEMO_HINT = (
    'from the root of a checkout: pip install torch==2.13.0 -e ".[demo,eval]" -e ./backends/torch '
    "(the PyTorch backend is not on PyPI yet)"
)

#: The CAM rule of Zhou et al.: boxes keep the pixels at 20% of the map's maximum or more.
BOX_THRESHOLD = 0.2

#: The demo's classifier (EfficientNet-Lite0) predicts the 1000 ImageNet-1k classes.
N_CLASSES = 1000

#: Method slugs: the ``method`` column of ``results.csv`` and part of the file names.
METHOD_SLUGS = ("l2caf-class-oblivious", "l2caf-class-specific", "gradcam")

#: Columns of ``results.csv``, in order. ``x0, y0, x1, y1`` is the box in the photo's own
#: pixels (pixel edges, 2 decimals), ``model_x0 ... model_y1`` the same box in the 224 x 224
#: frame the network sees (and the overlays show). ``solver`` is the solver the row's map
#: came from (``Explanation.solvers``): ``exact`` (closed form, so ``n_iter`` is 0), ``adam``
#: (also where a closed-form filter failed its check) or ``adam-lbfgs`` (a layer whose head
#: is not affine) for L2-CAF rows, empty for Grad-CAM (no iterations).
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
    "model_x0",
    "model_y0",
    "model_x1",
    "model_y1",
    "box_score",
    "solver",
    "n_iter",
)

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class DemoError(Exception):
    """A foreseeable failure: reported as one line on stderr, exit status 2."""


def parse_device(text: str) -> str:
    """``--device``'s argparse type: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected 'auto', 'cpu', 'cuda' or 'cuda:N' (N a GPU index), got {text!r}"
        )
    return text


def check_args(args: argparse.Namespace) -> None:
    """The checks that need no computation (and no torch), before anything runs.

    Raises
    ------
    DemoError
        ``--top-k`` above the number of classes, or an ``--out`` that cannot be a
        directory one can write to.
    """
    if args.top_k > N_CLASSES:
        raise DemoError(
            f"--top-k {args.top_k} is more than the {N_CLASSES} classes the model predicts; "
            f"use at most {N_CLASSES}."
        )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {str(out)!r} exists and is not a directory; name a directory.")
    existing = out
    while not existing.exists():  # the directory the output one would be created in
        existing = existing.parent
    if not existing.is_dir():
        raise DemoError(f"--out {str(out)!r} cannot be created: {str(existing)!r} is a file.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DemoError(f"--out {str(out)!r}: {str(existing)!r} is not writable.")


def owned_file(name: str, photo_names: tuple[str, ...] | list[str]) -> bool:
    """Whether a file name is one the demo writes (so that a new run may replace it)."""
    if name in ("contact_sheet.png", "results.csv"):
        return True
    photos = "|".join(map(re.escape, photo_names))
    slugs = "|".join(map(re.escape, METHOD_SLUGS))
    return re.fullmatch(rf"(?:{photos})_(?:{slugs})(?:_top\d+)?\.png", name) is not None
