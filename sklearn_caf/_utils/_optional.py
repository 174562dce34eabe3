"""Optional dependencies, imported when first needed, with one install hint per extra."""

from __future__ import annotations

import importlib
from types import ModuleType

#: The distribution that provides each optional top-level module.
_DISTRIBUTIONS = {
    "PIL": "pillow",
    "skimage": "scikit-image",
    "matplotlib": "matplotlib",
    "numba": "numba",
    "pandas": "pandas",
    "pyarrow": "pyarrow",
    "distributed": "distributed",
}


def install_hint(extra: str) -> str:
    """How to install one of the root package's extras, from PyPI or from a checkout."""
    return f'pip install "sklearn-caf[{extra}]" (from a checkout: pip install -e ".[{extra}]")'


def import_optional(module: str, *, needed_by: str, extra: str = "eval") -> ModuleType:
    """Import ``module`` or raise an :class:`ImportError` that says what needs it and how to
    install it: the distribution alone, or the ``extra`` of sklearn-caf that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        dist = _DISTRIBUTIONS.get(module.split(".")[0], module.split(".")[0])
        raise ImportError(
            f"{needed_by} needs {dist}: pip install {dist}, or the {extra!r} extra: "
            f"{install_hint(extra)}."
        ) from exc
