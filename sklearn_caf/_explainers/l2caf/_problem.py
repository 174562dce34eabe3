"""The problem L2-CAF minimizes: the filter (per constraint), the head's outputs through it and
the loss (Eq. 1 or Eq. 2) on rows of a batch; whether a start is dead."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..._utils import spatial_axes
from .._frames import FrameRows
from . import _exact

# A start is dead when the loss changes by less than this fraction of itself per radian of
# rotation of the filter: in float32 a live gradient is many orders of magnitude above it,
# and a dead one (every unit after the filter switched off) is exactly zero.
_DEAD_RTOL = 1e-7


def _filter_shape(bound: Any, a: Any) -> tuple[int, ...]:
    return tuple(int(a.shape[ax]) for ax in spatial_axes(len(a.shape), bound.channel_axis))


def _cell_grid(spatial: tuple[int, ...]) -> np.ndarray:
    """``(1, N, *spatial)``: every cell's coordinate along each of the N spatial axes, in
    cells (0 at the first cell's centre)."""
    axes = np.meshgrid(*(np.arange(s) for s in spatial), indexing="ij")
    return np.stack(axes)[None].astype(np.float32)


def _vanishing(
    loss: np.ndarray, grad: np.ndarray, f: np.ndarray, sphere: bool = True
) -> np.ndarray:
    """Rows whose loss does not change to first order as the filter turns on the sphere
    (``sphere``: the ``"l2"`` constraint) or as the parameters move by one unit (a unit of
    softmax logit, or one cell of a Gaussian's mean)."""
    m = len(f)
    f, grad = f.reshape(m, -1).astype(np.float64), grad.reshape(m, -1).astype(np.float64)
    if not sphere:
        slope = np.linalg.norm(grad, axis=1)
        return slope <= _DEAD_RTOL * np.maximum(np.abs(loss.astype(np.float64)), 1e-30)
    norm = np.linalg.norm(f, axis=1)
    unit = f / np.maximum(norm, 1e-300)[:, None]
    tangent = grad - (grad * unit).sum(axis=1, keepdims=True) * unit
    slope = np.linalg.norm(tangent, axis=1) * norm  # loss change per radian
    return slope <= _DEAD_RTOL * np.maximum(np.abs(loss.astype(np.float64)), 1e-30)


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[labels]


def _effect_residual(outputs: np.ndarray, jac: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`_exact.fit_affine`'s residual measured against how far the probes move the
    output rather than against the output: where the output carries a large part the
    filter does not touch (a skip connection around the layer, a constant offset, the
    other frames of a clip), a head that is not affine would pass for affine otherwise,
    and the closed form would return a wrong filter."""
    n_cells = jac.shape[2]
    checks = _exact.affine_probes(n_cells)[1 + n_cells :].astype(np.float64)
    moved = np.einsum("ndp,kp->nkd", jac, checks)
    actual = outputs[:, 1 + n_cells :].astype(np.float64) - b[:, None]
    return _exact.relative_residual(moved, actual)


class _FilterLoss:
    """The per-row L2-CAF loss as a pure function of explicit tensors.

    ``loss(f, features, context, target)``: ``f`` the optimized parameters (see
    :meth:`filters`), ``features`` the layer's feature maps (fast variant) or the images
    (vanilla), ``target`` the unfiltered outputs (class-oblivious) or the class weights
    ``1 - 2 [j == c]`` (class-specific). One object per explainer configuration (and, for
    the Gaussian, per map shape: its cell grid is a constant of the loss), so that a
    backend compiles it once for all batches.

    For clips, each row's features are its clip's ``T`` frames and ``select`` marks the
    row's own frame: the filter multiplies that frame, the others pass unfiltered.
    """

    def __init__(
        self,
        bound: Any,
        objective: str,
        vanilla: bool,
        frames: FrameRows,
        constraint: str = "l2",
        spatial: tuple[int, ...] | None = None,
    ):
        self.bound, self.objective, self.vanilla = bound, objective, vanilla
        self.frames, self.constraint = frames, constraint
        # Made on the device once, not at every iteration.
        self.grid = bound.asarray(_cell_grid(spatial)) if constraint == "gaussian" else None

    def filters(self, f: Any) -> Any:
        """The filter that multiplies the feature maps, ``(m, *spatial)``, from the
        parameters: ``f / ||f||`` (``"l2"``, ``f`` of the map's shape), ``softmax(f)``
        over the cells (``"softmax"``), or the Gaussian ``exp(-||p - mu||^2 / 2)`` over the
        cells ``p`` divided by its sum (``"gaussian"``, ``f`` the means ``mu``, ``(m, N)``).
        """
        bound = self.bound
        if self.constraint == "l2":
            axes = tuple(range(1, len(f.shape)))
            return f / bound.sqrt(bound.sum(f * f, axis=axes, keepdims=True))
        if self.constraint == "softmax":
            logits = f
        else:
            mu = f
            for _ in range(len(self.grid.shape) - 2):  # (m, N) -> (m, N, 1, ..., 1)
                mu = bound.expand_dims(mu, -1)
            diff = self.grid - mu
            logits = bound.sum(diff * diff, axis=1) * -0.5
        # The normalized Gaussian is the softmax of -||p - mu||^2 / 2: subtracting the
        # largest logit keeps it finite when mu is far outside the grid (every density
        # would underflow to zero there, and 0 / 0 is no map).
        axes = tuple(range(1, len(logits.shape)))
        e = bound.exp(logits - bound.max(logits, axis=axes, keepdims=True))
        return e / bound.sum(e, axis=axes, keepdims=True)

    def outputs(self, f: Any, features: Any, context: tuple, select: Any = None) -> Any:
        bound = self.bound
        if self.vanilla:  # the whole network, every iteration
            a, context = bound.trunk(features)
        else:
            a = features
        unit = self.frames.multiplier(bound, self.filters(f), select)
        return bound.head(a * bound.expand_dims(unit, bound.channel_axis), context)

    def __call__(
        self, f: Any, features: Any, context: tuple, target: Any, select: Any = None
    ) -> Any:
        out = self.outputs(f, features, context, select)
        bound = self.bound
        if self.objective == "class-oblivious":
            diff = out - target
            return bound.mean(diff * diff, axis=1)
        # Eq. 2, sum_{j != c} z_j - z_c, as one weighted sum: weights 1 - 2 [j == c].
        return bound.sum(out * target, axis=1)


@dataclass
class _FilterProblem:
    """The L2-CAF losses of a batch of filters, one row per (image, target)."""

    bound: Any
    loss_fn: _FilterLoss
    features: Any  # the layer's feature maps (fast) or the images (vanilla), one per row
    context: tuple = ()
    target: Any = None  # unfiltered outputs (class-oblivious) or class weights (specific)
    # Clips: the rows' own frames (see FrameRows.select), and which context tensors (and,
    # in the fast variant, the features) have T rows per problem row.
    select: Any = None
    frame_level: tuple = ()

    @property
    def args(self) -> tuple:
        if self.select is None:
            return self.features, self.context, self.target
        return self.features, self.context, self.target, self.select

    def take(self, keep: np.ndarray) -> _FilterProblem:
        take, frames = self.bound.take, self.loss_fn.frames
        frame_rows = frames.rows(keep)
        return replace(
            self,
            features=take(self.features, keep if self.loss_fn.vanilla else frame_rows),
            context=frames.take_context(self.bound, self.context, self.frame_level, keep),
            target=None if self.target is None else take(self.target, keep),
            select=None if self.select is None else take(self.select, frame_rows),
        )

    def outputs(self, f: Any) -> Any:
        return self.loss_fn.outputs(f, *self.args[:2], *self.args[3:])

    def loss(self, f: Any) -> Any:
        return self.loss_fn(f, *self.args)
