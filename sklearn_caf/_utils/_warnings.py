"""Where a warning points: the user's line, not ours."""

from __future__ import annotations

import sys

_PASSED_THROUGH = {"sklearn", "torch", "tensorflow", "keras"}


def caller_stacklevel() -> int:
    """``stacklevel`` for :func:`warnings.warn` called right here: the first frame outside
    sklearn-caf, its backends (``sklearn_caf_*``), scikit-learn (whose code calls ours in
    a pipeline) and the frameworks (whose decorators wrap our functions)."""
    frame, level = sys._getframe(1), 1
    while frame is not None:
        package = frame.f_globals.get("__name__", "").split(".")[0]
        if not (package.startswith("sklearn_caf") or package in _PASSED_THROUGH):
            break
        frame, level = frame.f_back, level + 1
    return level
