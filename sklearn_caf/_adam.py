"""Batched Adam where every row is its own problem and stops on its own.

The loop touches the host only at convergence checks (every ``check_every`` iterations):
there it reads the rows' losses, stores the rows that converged and drops them from the
batch, so later iterations spend nothing on finished rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class RowProblem(Protocol):
    """Independent per-row objectives over a parameter tensor of shape (m, ...)."""

    def loss(self, params: Any) -> Any:
        """Per-row losses, shape (m,)."""

    def take(self, rows: np.ndarray) -> RowProblem:
        """The same problem restricted to ``rows``."""


@dataclass
class AdamSchedule:
    """Adam with a learning rate decaying linearly from ``learning_rate`` to
    ``final_learning_rate`` over ``max_iter`` iterations (the L2-CAF authors' setting)."""

    learning_rate: float
    final_learning_rate: float
    max_iter: int
    tol: float
    check_every: int
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def rate(self, t: int) -> float:
        frac = (t - 1) / max(self.max_iter - 1, 1)
        return self.learning_rate + (self.final_learning_rate - self.learning_rate) * frac


@dataclass
class RowsResult:
    params: np.ndarray  # (m, ...) on the host
    loss: np.ndarray  # (m,) loss at the last check
    n_iter: np.ndarray  # (m,) iterations run
    converged: np.ndarray  # (m,) bool


def _changed_little(loss: np.ndarray, previous: np.ndarray, tol: float) -> np.ndarray:
    # The paper's test |L^l - L^{l-d}| < eps, made relative for losses far above 1 (a
    # class-specific loss sums a thousand logits; an absolute 1e-5 is below float32's
    # resolution there and would never be met).
    return np.abs(loss - previous) <= tol * np.maximum(1.0, np.abs(previous))


def minimize_rows(bound: Any, problem: RowProblem, x0: Any, schedule: AdamSchedule) -> RowsResult:
    """Minimize each row of ``problem`` from ``x0`` (a tensor on ``bound``'s device)."""
    m = int(x0.shape[0])
    out_params = np.empty((m, *tuple(x0.shape[1:])), dtype=np.float32)
    out_loss = np.full(m, np.nan)
    n_iter = np.full(m, schedule.max_iter)
    converged = np.zeros(m, dtype=bool)

    rows = np.arange(m)
    x, m1, m2 = x0, bound.zeros_like(x0), bound.zeros_like(x0)
    b1, b2 = schedule.beta1, schedule.beta2
    previous = None
    for t in range(1, schedule.max_iter + 1):
        loss, grad = bound.value_and_grad(problem.loss, x)
        m1 = m1 * b1 + grad * (1 - b1)
        m2 = m2 * b2 + (grad * grad) * (1 - b2)
        step = float(schedule.rate(t) * np.sqrt(1 - b2**t) / (1 - b1**t))
        x = x - (m1 / (bound.sqrt(m2) + schedule.eps)) * step

        last = t == schedule.max_iter
        if not (t == 1 or last or (t - 1) % schedule.check_every == 0):
            continue
        current = bound.to_numpy(loss).astype(np.float64)
        if previous is None:
            done = np.zeros(rows.size, dtype=bool)
        else:
            done = _changed_little(current, previous, schedule.tol)
        converged[rows[done]] = True
        out_loss[rows] = current
        previous = current
        if last:
            done[:] = True
        if done.any():
            finished = np.flatnonzero(done)
            out_params[rows[finished]] = bound.to_numpy(bound.take(x, finished))
            n_iter[rows[finished]] = t
            keep = np.flatnonzero(~done)
            if keep.size == 0:
                break
            rows, previous = rows[keep], previous[keep]
            x, m1, m2 = (bound.take(v, keep) for v in (x, m1, m2))
            problem = problem.take(keep)
    return RowsResult(out_params, out_loss, n_iter, converged)
