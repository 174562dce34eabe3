"""The default on heads that are not affine in the filter: the authors' Adam, then L-BFGS.

The class-oblivious loss at a layer inside the network has several local optima of nearly
the same loss; which one a solver reaches depends on its first steps. The authors' Adam
(learning rate 0.5 at the start) takes large, sign-like steps and settles into its basin
within its first 100-150 iterations (on EfficientNet-Lite0's ``_blocks.10``), then spends
hundreds more creeping to the bottom of it with a slowly decaying rate. Riemannian L-BFGS
started from Adam's point reaches the same bottom in a few evaluations, but from the
uniform start it can walk into another basin. So: the first ``warm_iter`` iterations of
the authors' Adam (exactly those of ``solver="adam"``, same schedule over ``max_iter``),
then L-BFGS with short first steps (so that it stays in the basin Adam chose) until a step
turns the filter by less than its ``angle_tol``.

A row leaves Adam before ``warm_iter`` once its map has settled (``settle``, see
:class:`~sklearn_caf._explainers.l2caf._adam.MapSettle`): on EfficientNet-Lite0 most maps
stop moving well before the last row's does, and those rows need not wait.

Host synchronisations per batch: Adam's stretch reads the host at its checks only (after
iteration 1, every ``check_every``, every ``settle.every`` and at ``warm_iter``); L-BFGS
reads the losses and gradients of the active rows once per evaluation, the line search
deciding on the host.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ._adam import AdamSchedule, MapSettle, RowProblem, RowsResult, minimize_rows
from ._lbfgs import LBFGSOptions, minimize_rows_lbfgs


def minimize_rows_adam_lbfgs(
    bound: Any,
    problem: RowProblem,
    x0: Any,
    schedule: AdamSchedule,
    warm_iter: int,
    options: LBFGSOptions,
    step: Any = None,
    value_and_grad: Any = None,
    settle: MapSettle | None = None,
) -> RowsResult:
    """``warm_iter`` Adam iterations of ``schedule`` from ``x0`` (a device tensor), fewer
    for a row whose map has settled before (``settle``), then L-BFGS (``options``) from
    there, each row on its own.

    ``n_iter`` counts head evaluations: Adam's iterations plus L-BFGS's evaluations, at
    most ``schedule.max_iter`` in all; ``converged`` is L-BFGS's stopping test.
    """
    warm_iter = int(min(warm_iter, schedule.max_iter))
    left = schedule.max_iter - warm_iter
    if left <= 0:  # no L-BFGS to follow: the authors' Adam, with its own stopping test
        return minimize_rows(bound, problem, x0, schedule, step=step, stop_after=warm_iter)
    warm = minimize_rows(
        bound, problem, x0, schedule, step=step, stop_after=warm_iter, settle=settle
    )
    options = replace(options, max_eval=left)
    polish = minimize_rows_lbfgs(bound, problem, warm.params, options, value_and_grad)
    return RowsResult(
        polish.params,
        polish.loss,
        np.asarray(warm.n_iter) + np.asarray(polish.n_iter),
        polish.converged,
    )
