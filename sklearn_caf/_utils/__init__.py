"""Plumbing shared by every part of sklearn-caf: optional imports, scikit-learn's private API,
warnings that point at the user's line, array layout helpers. Nothing here is public API."""

from ._arrays import spatial_axes
from ._optional import import_optional, install_hint
from ._sklearn import Interval, StrOptions, fit_context, validate_params
from ._warnings import caller_stacklevel

__all__ = [
    "Interval",
    "StrOptions",
    "caller_stacklevel",
    "fit_context",
    "import_optional",
    "install_hint",
    "spatial_axes",
    "validate_params",
]
