"""Batched Adam where every row is its own problem and stops on its own.

The loop touches the host only at convergence checks (every ``check_every`` iterations):
there it reads the rows' losses, stores the rows that converged and drops them from the
batch, so later iterations spend nothing on finished rows.

One iteration (loss, gradient, moment updates, parameter update) is :class:`AdamStep`, a
function of tensors only: the loss is a pure function of the parameters and the problem's
explicit tensor arguments. The iterations between two checks run as one call of
:class:`AdamSteps` (``BoundModel.fori_loop`` over :class:`AdamStep`), which a backend
compiles once (``BoundModel.compile``, e.g. ``tf.function`` with a ``tf.while_loop``) and
reuses for every stretch, every batch and after rows are dropped: a compiled call costs
a fixed overhead that would otherwise be paid at every iteration of a small head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ...backend import compiled, fori_loop


class RowProblem(Protocol):
    """Independent per-row objectives over a parameter tensor of shape (m, ...).

    ``loss_fn(params, *args)`` gives the per-row losses, shape (m,); it is the same
    function object for every batch and every subset of rows (a backend may compile it),
    and everything that changes with the rows is in ``args``.
    """

    loss_fn: Callable[..., Any]
    args: tuple

    def take(self, rows: np.ndarray) -> RowProblem:
        """The same problem restricted to ``rows`` (``args`` restricted, same ``loss_fn``)."""


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


class AdamStep:
    """One Adam iteration on every row:
    ``(x, m1, m2, sizes, eps_scale, *args) -> (loss, x, m1, m2)``.

    ``loss`` is the per-row loss at the parameters before the update. ``sizes`` holds the
    iteration's bias-corrected learning rate ``lr_t sqrt(1 - b2^t) / (1 - b1^t)`` and its
    ``eps sqrt(1 - b2^t)``: the update is then exactly ``torch.optim.Adam``'s,
    ``lr_t / (1 - b1^t) * m1 / (sqrt(m2 / (1 - b2^t)) + eps)`` (the authors' PyTorch code).
    ``eps_scale`` (one factor per row, shaped to broadcast against ``x``) multiplies
    ``eps``: 1 except for rows whose gradients are all far below ``eps`` (see
    :func:`eps_scale`).
    The math is written once here, against the bound model's tensor ops; a backend
    compiles the whole step through ``bound.compile`` (one trace serves every batch and
    subset of rows).
    """

    def __init__(self, bound: Any, loss_fn: Callable[..., Any], schedule: AdamSchedule):
        self.bound, self.loss_fn = bound, loss_fn
        self.beta1, self.beta2, self.eps = schedule.beta1, schedule.beta2, schedule.eps

    def __call__(self, x: Any, m1: Any, m2: Any, sizes: Any, eps_scale: Any, *args: Any) -> tuple:
        bound, b1, b2 = self.bound, self.beta1, self.beta2
        loss, grad = bound.value_and_grad(lambda p: self.loss_fn(p, *args), x)
        m1 = m1 * b1 + grad * (1 - b1)
        m2 = m2 * b2 + (grad * grad) * (1 - b2)
        x = x - (m1 / (bound.sqrt(m2) + sizes[1] * eps_scale)) * sizes[0]
        return loss, x, m1, m2


class AdamSteps:
    """Adam iterations on every row, run in one call:
    ``(x, m1, m2, step_sizes, n, eps_scale, *args) -> (loss, x, m1, m2)``.

    ``step_sizes`` is an (n, 2) tensor of the :class:`AdamStep` ``sizes`` of the ``n``
    iterations (``n`` its length, a Python int the backend may turn into a tensor); ``loss``
    is the per-row loss of the last iteration, at the parameters before its update: what a
    convergence check after these iterations reads. The loop is the bound model's optional
    ``fori_loop`` (a ``tf.while_loop`` inside ``tf.function``), else a Python loop, so that
    one compiled call covers a whole stretch between two checks.
    """

    def __init__(self, bound: Any, loss_fn: Callable[..., Any], schedule: AdamSchedule):
        self.bound, self.step = bound, AdamStep(bound, loss_fn, schedule)

    def __call__(
        self, x: Any, m1: Any, m2: Any, step_sizes: Any, n: Any, eps_scale: Any, *args: Any
    ) -> tuple:
        bound, step = self.bound, self.step

        def body(i: Any, carry: tuple) -> tuple:
            _, x, m1, m2 = carry
            return step(x, m1, m2, step_sizes[i], eps_scale, *args)

        # A loss of the right shape and dtype to start the carry (a loop's carry keeps
        # its structure); ``n >= 1`` always overwrites it.
        loss = bound.sum(bound.zeros_like(x), axis=tuple(range(1, len(x.shape))))
        return fori_loop(bound, n, body, (loss, x, m1, m2))


def check_points(schedule: AdamSchedule, stop_after: int | None = None) -> list[int]:
    """The iterations after which the loop checks convergence: 1, 1 + d, 1 + 2d, ... and
    ``max_iter`` (``d = check_every``); with ``stop_after``, those before it and
    ``stop_after`` itself, the last."""
    last = schedule.max_iter if stop_after is None else min(stop_after, schedule.max_iter)
    points = [t for t in range(1, last + 1, max(int(schedule.check_every), 1))]
    if points[-1] != last:
        points.append(last)
    return points


@dataclass
class MapSettle:
    """End a row once its map has settled: every ``every`` iterations (from ``2 * every``),
    when ``|x|`` correlates at ``tau`` or more with ``|x|`` ``every`` iterations earlier
    (Pearson, over the row's cells). Used to leave the authors' Adam early in
    ``solver="adam-lbfgs"`` (see ``benchmarks/study_adam_switch.py``)."""

    every: int = 10
    tau: float = 0.9995


def _map_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.abs(a.reshape(len(a), -1)).astype(np.float64)
    b = np.abs(b.reshape(len(b), -1)).astype(np.float64)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1), 1.0)


def eps_scale(grad: np.ndarray, eps: float) -> np.ndarray:
    """Per-row factors of Adam's ``eps`` from the rows' gradients ``g0`` at the start,
    (m, ...) -> (m,): ``min(1, max|g0| / eps) ** 2``.

    1, the authors' Adam exactly, wherever some component of the gradient reaches
    ``eps`` (1e-8; torch's and the authors'), and for rows without any gradient (dead
    starts: nothing to scale). Below that, ``eps`` would outweigh every gradient and Adam
    would crawl, a gradient descent with step ``lr / eps`` (a loss of 1e-10 throughout,
    from a network with tiny outputs): ``eps`` then shrinks with the square of the
    gradient's size, to ``max|g0| ** 2 / eps``, below the gradient by the same ratio that
    the gradient is below ``eps``. Adam is invariant to the loss's scale but for ``eps``,
    so such a row follows nearly the steps it would on the same loss scaled up.
    """
    top = np.abs(grad.reshape(len(grad), -1).astype(np.float64)).max(axis=1)
    scale = np.minimum(1.0, top / eps) ** 2
    return np.where(top > 0, np.maximum(scale, 1e-20), 1.0)


@dataclass
class RowsResult:
    params: np.ndarray  # (m, ...) on the host
    loss: np.ndarray  # (m,) loss at the last check
    n_iter: np.ndarray  # (m,) iterations run
    converged: np.ndarray  # (m,) bool


def _changed_little(
    loss: np.ndarray, previous: np.ndarray, tol: float, start: np.ndarray | None = None
) -> np.ndarray:
    """The convergence test: ``|L_t - L_{t-d}| <= tol * max(min(1, |L_0|), |L_{t-d}|)``.

    The paper's test ``|L^l - L^{l-d}| < eps`` wherever the loss is of order 1 or more at
    the start (``L_0``, the loss of the initial filter, given as ``start``), made relative
    for losses far above 1 (a class-specific loss sums a thousand logits; an absolute 1e-5
    is below float32's resolution there and would never be met) and, where the loss starts
    below 1, measured in units of that start: a problem whose loss is 1e-10 throughout
    (tiny outputs) would otherwise pass the absolute test at its first check, wherever the
    filter is. Where the loss starts at 1 or more the test is exactly the paper's (made
    relative above 1); without ``start`` it is as if it did.
    """
    floor = 1.0 if start is None else np.minimum(1.0, np.abs(start))
    return np.abs(loss - previous) <= tol * np.maximum(floor, np.abs(previous))


def minimize_rows(
    bound: Any,
    problem: RowProblem,
    x0: Any,
    schedule: AdamSchedule,
    step: Callable[..., Any] | None = None,
    stop_after: int | None = None,
    settle: MapSettle | None = None,
) -> RowsResult:
    """Minimize each row of ``problem`` from ``x0`` (a tensor on ``bound``'s device).

    ``step`` is an :class:`AdamSteps` of ``problem.loss_fn``, possibly compiled; callers
    that explain many batches pass the same one every time (so it is traced once). By
    default one is made and compiled here. The iterations between two convergence checks
    run as one call of it: the host waits on the device only at the checks.
    ``stop_after`` ends every row after that many iterations of the schedule (its first
    ones, unchanged: a warm start on the schedule's own trajectory); rows stopped there
    are not ``converged`` unless the convergence test passed. ``settle`` also ends a row
    (not ``converged``) once its map has settled; its checks read the rows' parameters on
    the host every ``settle.every`` iterations.
    """
    if step is None:
        step = compiled(bound, AdamSteps(bound, problem.loss_fn, schedule))
    m = int(x0.shape[0])
    # The loss and gradient at the start: the convergence test's scale (_changed_little)
    # and Adam's eps (eps_scale). One head evaluation.
    loss0, grad0 = bound.value_and_grad(lambda p: problem.loss_fn(p, *problem.args), x0)
    start_loss = bound.to_numpy(loss0).astype(np.float64)
    scale = eps_scale(bound.to_numpy(grad0), schedule.eps)
    eps_rows = bound.asarray(scale.reshape(m, *(1,) * (len(x0.shape) - 1)).astype(np.float32))
    out_params = np.empty((m, *tuple(x0.shape[1:])), dtype=np.float32)
    out_loss = np.full(m, np.nan)
    n_iter = np.full(m, schedule.max_iter)
    converged = np.zeros(m, dtype=bool)

    rows = np.arange(m)
    x, m1, m2 = x0, bound.zeros_like(x0), bound.zeros_like(x0)
    b1, b2 = schedule.beta1, schedule.beta2
    previous = None
    # Bias-corrected learning rates and epsilons of every iteration, made on the host once.
    step_sizes = np.asarray(
        [
            (
                schedule.rate(t) * np.sqrt(1 - b2**t) / (1 - b1**t),
                schedule.eps * np.sqrt(1 - b2**t),
            )
            for t in range(1, schedule.max_iter + 1)
        ],
        dtype=np.float32,
    )
    start = 0  # iterations done
    points = check_points(schedule, stop_after)
    tests = set(points)  # the convergence test runs at these, |L_t - L_{t-d}| as before
    if settle is not None:
        points = sorted(tests | set(range(settle.every, points[-1], settle.every)))
    earlier = None  # the rows' parameters at the previous settle check
    for t in points:
        sizes = bound.asarray(step_sizes[start:t])
        loss, x, m1, m2 = step(x, m1, m2, sizes, t - start, eps_rows, *problem.args)
        start = t
        last = t == points[-1]
        done = np.zeros(rows.size, dtype=bool)
        now = None  # the rows' parameters on the host, where a settle check read them
        if t in tests:
            current = bound.to_numpy(loss).astype(np.float64)
            if previous is not None:
                done = _changed_little(current, previous, schedule.tol, start_loss)
            converged[rows[done]] = True
            out_loss[rows] = current
            previous = current
        if settle is not None and t % settle.every == 0:
            now = bound.to_numpy(x)
            if earlier is not None:
                settled = _map_correlation(now, earlier) >= settle.tau
                if settled.any() and t not in tests:
                    out_loss[rows[settled]] = bound.to_numpy(loss)[settled]
                done |= settled
            earlier = now
        if last:
            done[:] = True
        if done.any():
            finished = np.flatnonzero(done)
            params = bound.take(x, finished) if now is None else now[finished]
            out_params[rows[finished]] = bound.to_numpy(params)
            n_iter[rows[finished]] = t
            keep = np.flatnonzero(~done)
            if keep.size == 0:
                break
            rows = rows[keep]
            previous = None if previous is None else previous[keep]
            start_loss = start_loss[keep]
            earlier = None if earlier is None else earlier[keep]
            x, m1, m2, eps_rows = (bound.take(v, keep) for v in (x, m1, m2, eps_rows))
            problem = problem.take(keep)
    return RowsResult(out_params, out_loss, n_iter, converged)
