"""BR-NPA pooling as a trainable PyTorch layer.

:class:`BRNPAPool2d` is a drop-in replacement for global average pooling: it returns the
concatenated ranked representative vectors of BR-NPA (Gomez et al., Algorithm 1), and the
attention maps on request. The math is the core's (``sklearn_caf._explainers._brnpa``), run on
torch tensors, so the layer and :class:`sklearn_caf.BRNPAPooling` give the same numbers.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from sklearn_caf._explainers import EPS, check_layer_params, representative_vectors

from ._ops import TorchOps

__all__ = ["BRNPAOutput", "BRNPAPool2d"]


class BRNPAOutput(NamedTuple):
    """What :meth:`BRNPAPool2d.parts` returns (torch tensors, with gradients).

    Attributes
    ----------
    vectors : Tensor of shape (n, n_parts, C)
        The representative vectors, ranked.
    maps : Tensor of shape (n, n_parts, H, W)
        The attention map of each part; each sums to 1.
    feature_norms : Tensor of shape (n, H, W)
        The norm of each feature vector plus 1e-5 (the initial activation).
    indices : Tensor of shape (n, n_parts), int64
        The flat position (``row * W + column``) each part started from.
    """

    vectors: torch.Tensor
    maps: torch.Tensor
    feature_norms: torch.Tensor
    indices: torch.Tensor


class BRNPAPool2d(nn.Module):
    """BR-NPA pooling of (n, C, H, W) feature maps into (n, n_parts * C) vectors.

    Put it where a network has global average pooling (and its flatten), and widen the
    classifier after it to ``n_parts * C`` inputs. The layer has no parameters; gradients
    flow to the features through the similarities and the weights (the selected positions
    are constants).

    Parameters
    ----------
    n_parts : int, default=3
        Number of ranked parts.
    selection : {"active", "random"}, default="active"
        Start each part from the most active vector, or from random distinct positions
        (the ablation of the paper's Table 4; drawn from torch's global generator).
    refine : bool, default=True
        ``False``: each part is its starting vector (the "no refinement" ablation).
    return_maps : bool, default=False
        ``True``: :meth:`forward` returns ``(vectors, maps)``, the maps of shape
        (n, n_parts, H, W).

    Examples
    --------
    >>> import torch
    >>> from sklearn_caf_torch.brnpa import BRNPAPool2d
    >>> net = torch.nn.Sequential(
    ...     torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
    ...     BRNPAPool2d(n_parts=3), torch.nn.Linear(3 * 8, 10),
    ... )
    >>> net(torch.rand(2, 3, 16, 16)).shape
    torch.Size([2, 10])
    >>> vectors, maps = BRNPAPool2d(n_parts=3, return_maps=True)(torch.rand(2, 8, 4, 4))
    >>> tuple(vectors.shape), tuple(maps.shape)
    ((2, 24), (2, 3, 4, 4))
    """

    def __init__(
        self,
        n_parts: int = 3,
        *,
        selection: str = "active",
        refine: bool = True,
        return_maps: bool = False,
    ):
        super().__init__()
        check_layer_params(n_parts, selection)
        self.n_parts = n_parts
        self.selection = selection
        self.refine = bool(refine)
        self.return_maps = bool(return_maps)

    def parts(self, x: torch.Tensor) -> BRNPAOutput:
        """Vectors, maps, feature norms and starting positions of ``x`` (n, C, H, W).

        Parameters
        ----------
        x : Tensor of shape (n, C, H, W)
            Feature maps, non-negative (after a ReLU).

        Returns
        -------
        parts : BRNPAOutput
            The ranked vectors, their maps, the feature norms and the starting positions,
            with gradients.
        """
        if x.ndim != 4:
            raise ValueError(
                f"BRNPAPool2d expects feature maps of shape (n, C, H, W); got {tuple(x.shape)}."
            )
        n, c, h, w = x.shape
        flat = x.reshape(n, c, h * w).transpose(1, 2)  # (n, L, C)
        result = representative_vectors(
            flat, self.n_parts, TorchOps, selection=self.selection, refine=self.refine, eps=EPS
        )
        return BRNPAOutput(
            vectors=result.vectors,
            maps=result.weights.reshape(n, self.n_parts, h, w),
            feature_norms=result.norms.reshape(n, h, w),
            indices=result.indices,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Pool ``x`` into the concatenated part vectors (and the maps with ``return_maps``).

        Parameters
        ----------
        x : Tensor of shape (n, C, H, W)
            Feature maps, non-negative (after a ReLU).

        Returns
        -------
        vectors : Tensor of shape (n, n_parts * C)
            The ranked representative vectors, part 1 first, concatenated.
        maps : Tensor of shape (n, n_parts, H, W)
            The parts' attention maps; returned only with ``return_maps=True``.
        """
        out = self.parts(x)
        vectors = out.vectors.reshape(out.vectors.shape[0], -1)
        return (vectors, out.maps) if self.return_maps else vectors

    def extra_repr(self) -> str:
        extra = f"n_parts={self.n_parts}"
        if self.selection != "active":
            extra += f", selection={self.selection!r}"
        if not self.refine:
            extra += ", refine=False"
        if self.return_maps:
            extra += ", return_maps=True"
        return extra
