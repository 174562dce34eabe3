"""Exact L2-CAF optima for heads that are affine in the filter.

When everything after the filtered layer is affine in the feature maps (global average
pooling then linear layers, as in ResNet, GoogLeNet or VGG-GAP), the output is
``z(f) = M f + b`` for a filter ``f`` with ``p`` cells. On the unit sphere, Eq. 1 of the
L2-CAF paper, ``min ||M f + b - z0||^2``, is a trust-region subproblem, and Eq. 2,
``min (1 - 2 e_c)^T (M f + b)``, is linear. Both have closed-form global optima, so the
filter costs ``p + 2`` head evaluations instead of hundreds of gradient steps.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

# Gaussian probes used to verify that a head is affine; fixed, so results are repeatable.
_N_CHECK_PROBES = 4
AFFINE_RTOL = 1e-3


def affine_probes(n_cells: int) -> np.ndarray:
    """Filters (2 + p + k, p): zero, the p unit vectors, and k Gaussian check filters."""
    rng = np.random.default_rng(0)
    return np.concatenate(
        [np.zeros((1, n_cells)), np.eye(n_cells), rng.standard_normal((_N_CHECK_PROBES, n_cells))]
    ).astype(np.float32)


def fit_affine(outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From head outputs at :func:`affine_probes`, shape (n, 1 + p + k, d), get ``M``, ``b``.

    Returns ``M`` (n, d, p), ``b`` (n, d) and each image's relative residual at the check
    probes (small when the head is affine).
    """
    outputs = outputs.astype(np.float64)
    n_cells = outputs.shape[1] - 1 - _N_CHECK_PROBES
    b = outputs[:, 0]
    jac = np.swapaxes(outputs[:, 1 : 1 + n_cells] - b[:, None], 1, 2)
    checks = affine_probes(n_cells)[1 + n_cells :].astype(np.float64)
    predicted = np.einsum("ndp,kp->nkd", jac, checks) + b[:, None]
    return jac, b, relative_residual(predicted, outputs[:, 1 + n_cells :])


def relative_residual(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Per-image max |predicted - actual| relative to the outputs' magnitude."""
    axes = tuple(range(1, actual.ndim))
    scale = np.maximum(np.abs(actual).max(axis=axes), 1e-12)
    return np.abs(predicted - actual).max(axis=axes) / scale


def min_linear(g: np.ndarray) -> np.ndarray:
    """argmin over the unit sphere of ``g . f``, row by row: ``-g / ||g||``."""
    norm = np.linalg.norm(g, axis=-1, keepdims=True)
    uniform = np.full_like(g, 1 / np.sqrt(g.shape[-1]))
    return np.where(norm > 0, -g / np.where(norm > 0, norm, 1), uniform)


def min_quadratic(q: np.ndarray, g: np.ndarray, *, n_bisect: int = 200) -> np.ndarray:
    """argmin over the unit sphere of ``f^T Q f - 2 g^T f`` for PSD ``Q``, row by row.

    The optimum solves ``(Q - mu I) f = g`` with ``mu <= lambda_min(Q)`` and ``||f|| = 1``
    (Gay 1981; Moré and Sorensen 1983). In the eigenbasis, ``||f(mu)||`` increases on
    ``(-inf, lambda_min)``, so ``mu`` is found by bisection. In the "hard case" ``g`` has no
    component in the lowest eigenspace and ``f(lambda_min)`` is shorter than 1: the optimum
    is ``f(lambda_min)`` completed to unit length along that eigenspace.
    """
    # One BLAS thread: the matrices are small (p x p), and OpenBLAS's threads would keep
    # spinning after the call and slow the model's next pass on the same cores (1.27x on
    # the class-oblivious exact solver called in a loop on 2 cores).
    with threadpool_limits(limits=1, user_api="blas"):
        lam, vec = np.linalg.eigh(q)
    c = np.einsum("npq,np->nq", vec, g)
    lam_min = lam[:, :1]
    scale = np.maximum(np.abs(lam).max(axis=1, keepdims=True), 1e-300)
    gnorm = np.linalg.norm(g, axis=-1, keepdims=True)
    lowest = lam - lam_min <= 1e-9 * scale

    # Hard case, decided before any root finding: rounding leaves ~1e-16 of g in the lowest
    # eigenspace, which bisection would blow up into an arbitrary component.
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(lowest, 0.0, c / np.where(lowest, 1.0, lam - lam_min))
    y_len = np.linalg.norm(y, axis=-1)
    c_low = np.linalg.norm(np.where(lowest, c, 0.0), axis=-1)
    hard = (c_low <= 1e-9 * np.maximum(gnorm[:, 0], 1e-300)) & (y_len < 1)
    y[hard, 0] = np.sqrt(1 - y_len[hard] ** 2)  # column 0 lies in the lowest eigenspace

    # Easy case: ||f(mu)|| <= ||g|| / (lambda_min - mu) <= 1 at mu = lambda_min - ||g||.
    # (Rows in the hard case divide by zero here; their result is discarded.)
    lo = lam_min - gnorm - 1e-12
    hi = lam_min.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(n_bisect):
            mid = 0.5 * (lo + hi)
            too_long = np.linalg.norm(c / (lam - mid), axis=-1, keepdims=True) > 1
            hi = np.where(too_long, mid, hi)
            lo = np.where(too_long, lo, mid)
        coefs = np.where(hard[:, None], y, c / (lam - lo))
    f = np.einsum("npq,nq->np", vec, coefs)
    return f / np.linalg.norm(f, axis=-1, keepdims=True)
