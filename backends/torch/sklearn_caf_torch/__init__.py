"""PyTorch backend for sklearn-caf.

Importing this package does not import torch: the registry reads
:attr:`TorchBackend.framework` to decide whether a model could be a torch model at all.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["TorchBackend"]


class TorchBackend:
    """Runs sklearn-caf's methods on ``torch.nn.Module`` models.

    The model is split at a layer with ``torch.fx``: the trunk (input -> layer) runs once
    per batch, the head (layer -> output) as often as a method needs.

    Examples
    --------
    >>> import torch
    >>> from sklearn_caf.backend import get_backend
    >>> get_backend(torch.nn.Linear(2, 2)).name
    'torch'
    """

    name = "torch"
    framework = "torch"

    def accepts(self, model: Any) -> bool:
        """True for ``torch.nn.Module`` instances (only checked once torch is imported)."""
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(model, torch.nn.Module)

    def bind(self, model: Any, *, layer: str | None, output: Any = None, device: Any = "auto"):
        """Split ``model`` at ``layer``; see :class:`sklearn_caf.backend.Backend`."""
        from ._bound import TorchBoundModel

        return TorchBoundModel(model, layer=layer, output=output, device=device)

    def __repr__(self) -> str:
        return "TorchBackend()"
