"""Riemannian L-BFGS on the unit sphere, row by row: L2-CAF's filters in few head calls.

L2-CAF's loss depends on the filter ``f`` only through ``f / ||f||``: it is a function on
the unit sphere, and its Euclidean gradient at a unit ``f`` is already tangent there. Each
row (an image and a target) is its own problem; all active rows are evaluated in one call
of ``value_and_grad`` (the head's forward and backward passes on the batch), then every
row takes its own decision on the host, where the vectors are tiny (``p`` cells):

* direction: the L-BFGS two-loop recursion (Nocedal and Wright, Alg. 7.4) over the last
  ``memory`` pairs ``(s, y)``, projected onto the tangent space at the current point
  (vector transport by projection; Huang, Gallivan and Absil 2015, Ring and Wirth 2012);
* step: the retraction ``R_x(t d) = (x + t d) / ||x + t d||`` with Armijo backtracking
  (quadratic interpolation, factors kept in [0.1, 0.5]); a step never turns the filter by
  more than ``max_angle`` radians, so the first steps cannot overshoot into another basin;
* stop (on the map, not the loss): a row stops when an accepted step turns its filter by
  less than ``angle_tol`` radians. The map ``|f|`` then moves by less than that too
  (``|| |a| - |b| || <= ||a - b||``); near a minimum the loss changes by ``O(angle^2)``.

One evaluation costs what one Adam iteration costs; quasi-Newton steps need far fewer of
them on the curved, ill-conditioned losses of heads that are not affine in the filter.
The loop reads the losses and gradients of the active rows on the host after every
evaluation: one device-to-host transfer of ``(m, p + 1)`` numbers per head call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._adam import RowProblem, RowsResult


@dataclass
class LBFGSOptions:
    """Settings of :func:`minimize_rows_lbfgs`."""

    max_eval: int  # loss-and-gradient evaluations per row
    angle_tol: float  # stop when an accepted step turns the filter by less (radians)
    memory: int = 10
    c1: float = 1e-4  # Armijo's sufficient decrease
    max_angle: float = 0.5  # the largest turn of one step (radians)
    first_angle: float = 0.2  # the turn of the first step, before any curvature is known


class ValueAndGrad:
    """``(x, *args) -> (loss, grad)``: per-row losses and their gradients, a pure function
    of tensors that a backend may compile once (``bound.compile``)."""

    def __init__(self, bound: Any, loss_fn: Callable[..., Any]):
        self.bound, self.loss_fn = bound, loss_fn

    def __call__(self, x: Any, *args: Any) -> tuple:
        return self.bound.value_and_grad(lambda p: self.loss_fn(p, *args), x)


def _project(v: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``v`` projected onto the tangent spaces at the unit rows ``x``."""
    return v - (v * x).sum(axis=1, keepdims=True) * x


def _two_loop(g: np.ndarray, s: np.ndarray, y: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``-H g`` for every row; pairs ``(s, y)`` of shape (m, k, p), newest last."""
    q = g.copy()
    k = s.shape[1]
    sy = (s * y).sum(axis=2)
    rho = np.where(valid, 1 / np.where(valid, sy, 1), 0.0)
    alpha = np.zeros(valid.shape)
    for j in range(k - 1, -1, -1):
        alpha[:, j] = rho[:, j] * (s[:, j] * q).sum(axis=1)
        q -= alpha[:, j, None] * y[:, j]
    # Initial scaling s.y / y.y of the newest pair (rows with pairs have the newest last).
    yy = (y[:, -1] * y[:, -1]).sum(axis=1)
    gamma = np.where(valid[:, -1], sy[:, -1] / np.where(valid[:, -1], yy, 1), 1.0)
    r = gamma[:, None] * q
    for j in range(k):
        beta = rho[:, j] * (y[:, j] * r).sum(axis=1)
        r += (alpha[:, j] - beta)[:, None] * s[:, j]
    return -r


def minimize_rows_lbfgs(
    bound: Any,
    problem: RowProblem,
    x0: np.ndarray,
    options: LBFGSOptions,
    value_and_grad: Callable[..., Any] | None = None,
) -> RowsResult:
    """Minimize each row of ``problem`` over the unit sphere from ``x0`` (host array (m, ...)).

    ``value_and_grad`` is a (compiled) :class:`ValueAndGrad` of ``problem.loss_fn``.
    Returns unit filters; ``n_iter`` counts the evaluations of each row.
    """
    if value_and_grad is None:
        value_and_grad = ValueAndGrad(bound, problem.loss_fn)
    shape = x0.shape[1:]
    m = x0.shape[0]
    x = x0.reshape(m, -1).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    p, k = x.shape[1], options.memory
    out_x, out_loss = x.copy(), np.full(m, np.nan)
    n_eval, converged = np.zeros(m, dtype=np.int64), np.zeros(m, dtype=bool)

    def evaluate(points: np.ndarray, prob: RowProblem) -> tuple[np.ndarray, np.ndarray]:
        loss, grad = value_and_grad(bound.asarray(points.reshape(-1, *shape)), *prob.args)
        grad = bound.to_numpy(grad).reshape(len(points), -1).astype(np.float64)
        return bound.to_numpy(loss).astype(np.float64), _project(grad, points)

    rows = np.arange(m)
    fx, gx = evaluate(x, problem)
    n_eval[:] = 1
    s_mem, y_mem = np.zeros((m, k, p)), np.zeros((m, k, p))
    valid = np.zeros((m, k), dtype=bool)
    d = np.zeros((m, p))
    t = np.zeros(m)
    need_dir = np.ones(m, dtype=bool)
    while rows.size:
        # New directions for rows that accepted a step (or start).
        if need_dir.any():
            nd = need_dir
            d[nd] = _project(_two_loop(gx[nd], s_mem[nd], y_mem[nd], valid[nd]), x[nd])
            slope = (d[nd] * gx[nd]).sum(axis=1)
            bad = slope >= 0  # not a descent direction: forget the curvature
            gnorm = np.linalg.norm(gx[nd], axis=1)
            fresh = bad | ~valid[nd, -1]
            scale = options.first_angle / np.maximum(gnorm, 1e-300)
            d_nd = d[nd]
            d_nd[fresh] = -gx[nd][fresh] * scale[fresh, None]
            d[nd] = d_nd
            v = valid[nd]
            v[bad] = False
            valid[nd] = v
            norm_d = np.linalg.norm(d[nd], axis=1)
            t[nd] = np.minimum(1.0, options.max_angle / np.maximum(norm_d, 1e-300))
            need_dir[:] = False
        slope = (d * gx).sum(axis=1)
        trial = x + t[:, None] * d
        trial /= np.linalg.norm(trial, axis=1, keepdims=True)
        ft, gt = evaluate(trial, problem)
        n_eval[rows] += 1
        # A trial where the loss has no gradient at all (every unit of the head switched
        # off) is refused like one without enough decrease: once there, no method moves.
        flat = np.linalg.norm(gt, axis=1) <= 1e-7 * np.maximum(np.abs(ft), 1e-30)
        ok = (ft <= fx + options.c1 * t * slope) & ~flat
        stalled = ~ok & (t * np.linalg.norm(d, axis=1) < 1e-9)
        # Accepted rows: a curvature pair, transported to the new point by projection.
        if ok.any():
            s_new = _project(trial[ok] - x[ok], trial[ok])
            y_new = gt[ok] - _project(gx[ok], trial[ok])
            sy = (s_new * y_new).sum(axis=1)
            good = sy > 1e-12 * np.linalg.norm(s_new, axis=1) * np.linalg.norm(y_new, axis=1)
            idx = np.flatnonzero(ok)[good]
            s_mem[idx] = np.roll(s_mem[idx], -1, axis=1)
            y_mem[idx] = np.roll(y_mem[idx], -1, axis=1)
            valid[idx] = np.roll(valid[idx], -1, axis=1)
            s_mem[idx, -1], y_mem[idx, -1], valid[idx, -1] = s_new[good], y_new[good], True
            # Earlier pairs live in earlier tangent spaces: project them to the new one.
            s_mem[ok] -= (s_mem[ok] * trial[ok, None]).sum(axis=2, keepdims=True) * trial[ok, None]
            y_mem[ok] -= (y_mem[ok] * trial[ok, None]).sum(axis=2, keepdims=True) * trial[ok, None]
            angle = np.linalg.norm(trial[ok] - x[ok], axis=1)
            x[ok], fx[ok], gx[ok] = trial[ok], ft[ok], gt[ok]
            need_dir[ok] = True
            small = np.zeros(rows.size, dtype=bool)
            small[ok] = angle < options.angle_tol
        else:
            small = np.zeros(rows.size, dtype=bool)
        # Rejected rows: backtrack (the minimizer of the quadratic through f, slope, ft).
        rej = ~ok
        if rej.any():
            denom = 2 * (ft[rej] - fx[rej] - t[rej] * slope[rej])
            t_q = -slope[rej] * t[rej] ** 2 / np.where(denom > 0, denom, 1)
            t_q = np.where(denom > 0, t_q, 0.5 * t[rej])
            t[rej] = np.clip(t_q, 0.1 * t[rej], 0.5 * t[rej])
        zero_grad = np.linalg.norm(gx, axis=1) == 0
        done_conv = small | stalled | zero_grad
        done = done_conv | (n_eval[rows] >= options.max_eval)
        converged[rows[done_conv]] = True
        if done.any():
            out_x[rows[done]] = x[done]
            out_loss[rows[done]] = fx[done]
            keep = np.flatnonzero(~done)
            rows = rows[keep]
            if keep.size == 0:
                break
            x, fx, gx, d, t = x[keep], fx[keep], gx[keep], d[keep], t[keep]
            s_mem, y_mem, valid, need_dir = s_mem[keep], y_mem[keep], valid[keep], need_dir[keep]
            problem = problem.take(keep)
    return RowsResult(out_x.reshape(m, *shape).astype(np.float32), out_loss, n_eval, converged)
