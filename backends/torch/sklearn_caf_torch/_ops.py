"""The tensor operations of the core's math (``sklearn_caf._explainers._brnpa.NumpyOps``),
for torch."""

from __future__ import annotations

from typing import Any

import torch


class TorchOps:
    """NumPy-style static methods on torch tensors; see
    ``sklearn_caf._explainers._brnpa.NumpyOps``."""

    @staticmethod
    def sum(x: torch.Tensor, axis: int, keepdims: bool = False) -> torch.Tensor:
        return torch.sum(x, dim=axis, keepdim=keepdims)

    sqrt = staticmethod(torch.sqrt)

    @staticmethod
    def argmax(x: torch.Tensor, axis: int) -> torch.Tensor:
        return torch.argmax(x, dim=axis)

    @staticmethod
    def one_hot(indices: torch.Tensor, depth: int, like: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(indices, depth).to(like.dtype)

    where = staticmethod(torch.where)

    @staticmethod
    def expand_dims(x: torch.Tensor, axis: int) -> torch.Tensor:
        return torch.unsqueeze(x, axis)

    @staticmethod
    def squeeze(x: torch.Tensor, axis: int) -> torch.Tensor:
        return torch.squeeze(x, axis)

    @staticmethod
    def stack(xs: list, axis: int) -> torch.Tensor:
        return torch.stack(xs, dim=axis)

    @staticmethod
    def random_uniform(like: torch.Tensor, rng: Any) -> torch.Tensor:
        # rng: a torch.Generator or None (torch's global generator, seeded by manual_seed).
        return torch.rand(like.shape, generator=rng, device=like.device, dtype=like.dtype)
