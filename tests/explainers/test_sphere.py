"""Closed-form L2-CAF optima on the unit sphere (sklearn_caf._explainers.l2caf._exact), checked
against brute force (scipy.optimize with restarts) and the trust-region optimality conditions."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy.optimize import minimize

from sklearn_caf._explainers.l2caf import _exact as _sphere


def quadratic(q, g, f):
    """The objective f^T Q f - 2 g^T f of one problem."""
    return f @ q @ f - 2 * g @ f


def brute_min_quadratic(q, g, rng, restarts=40):
    """Global minimum over the sphere by local minimization of f(u / ||u||) from many starts."""
    p = g.size

    def objective(u):
        f = u / np.linalg.norm(u)
        return quadratic(q, g, f)

    best = np.inf
    for _ in range(restarts):
        res = minimize(objective, rng.standard_normal(p), method="BFGS", options={"gtol": 1e-10})
        best = min(best, res.fun)
    return best


def random_psd(rng, p, rank):
    b = rng.standard_normal((rank, p))
    return b.T @ b


@given(
    seed=st.integers(0, 2**32 - 1),
    p=st.integers(1, 6),
    rank=st.integers(1, 6),
    g_scale=st.sampled_from([1e-3, 1.0, 30.0]),
)
def test_min_quadratic_is_the_global_minimum(seed, p, rank, g_scale):
    rng = np.random.default_rng(seed)
    q = random_psd(rng, p, rank)
    g = g_scale * rng.standard_normal(p)
    f = _sphere.min_quadratic(q[None], g[None])[0]
    assert_allclose(np.linalg.norm(f), 1, atol=1e-10)
    ours = quadratic(q, g, f)
    brute = brute_min_quadratic(q, g, rng)
    scale = np.abs(q).max() + np.abs(g).max()
    assert ours <= brute + 1e-7 * scale
    # Global optimality certificate of the trust-region problem (Gay 1981): the gradient
    # condition (Q - mu I) f = g with a multiplier mu <= lambda_min(Q).
    mu = f @ (q @ f - g)
    assert_allclose(q @ f - g, mu * f, atol=1e-6 * scale)
    assert mu <= np.linalg.eigvalsh(q)[0] + 1e-6 * scale


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5))
def test_min_quadratic_solves_each_row_on_its_own(seed, n):
    rng = np.random.default_rng(seed)
    q = np.stack([random_psd(rng, 4, 3) for _ in range(n)])
    g = rng.standard_normal((n, 4))
    batched = _sphere.min_quadratic(q, g)
    one_by_one = np.concatenate(
        [_sphere.min_quadratic(q[i : i + 1], g[i : i + 1]) for i in range(n)]
    )
    assert_allclose(batched, one_by_one, atol=1e-10)


def test_min_quadratic_known_interior_solution():
    # Q = diag(1, 4), g = (3, 0): (Q - mu I) f = g gives f = (3 / (1 - mu), 0), so ||f|| = 1
    # at mu = -2 and f = (1, 0); objective 1 - 6 = -5 (f = (-1, 0) gives 7, (0, +-1) gives 4).
    f = _sphere.min_quadratic(np.diag([1.0, 4.0])[None], np.array([[3.0, 0.0]]))
    assert_allclose(f, [[1.0, 0.0]], atol=1e-10)


def test_min_quadratic_hard_case():
    # g has no component on the lowest eigenvector e_0 and ||(Q - lambda_min I)^+ g|| < 1:
    # the optimum is f = (+-sqrt(1 - ||y||^2), y) with y_i = g_i / (lambda_i - lambda_min).
    q = np.diag([1.0, 2.0, 3.0])
    g = np.array([0.0, 0.1, 0.1])
    y = np.array([0.1 / 1.0, 0.1 / 2.0])
    expected = np.array([np.sqrt(1 - y @ y), *y])
    f = _sphere.min_quadratic(q[None], g[None])[0]
    assert_allclose(np.abs(f[0]), expected[0], atol=1e-8)
    assert_allclose(f[1:], expected[1:], atol=1e-8)
    assert_allclose(quadratic(q, g, f), quadratic(q, g, expected), atol=1e-12)
    assert quadratic(q, g, f) <= brute_min_quadratic(q, g, np.random.default_rng(0)) + 1e-9


def test_min_quadratic_hard_case_in_a_rotated_basis():
    rng = np.random.default_rng(3)
    rot, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    lam = np.array([0.5, 2.0, 2.5, 7.0])
    q = rot @ np.diag(lam) @ rot.T
    g = rot @ np.array([0.0, 0.2, -0.3, 0.4])  # orthogonal to the lowest eigenvector
    f = _sphere.min_quadratic(q[None], g[None])[0]
    assert_allclose(np.linalg.norm(f), 1, atol=1e-10)
    assert quadratic(q, g, f) <= brute_min_quadratic(q, g, rng) + 1e-9


@given(seed=st.integers(0, 2**32 - 1), p=st.integers(2, 6), shrink=st.floats(0.05, 0.95))
def test_min_quadratic_random_hard_cases(seed, p, shrink):
    # Q = R diag(lam) R^T with g orthogonal to the lowest eigenvector and
    # ||y|| = shrink < 1 for y_i = c_i / (lam_i - lam_0): the hard case, whose optimum is
    # R (+-sqrt(1 - ||y||^2), y). In floating point g's component on that eigenvector is
    # rounding noise (never exactly 0, unlike in a diagonal Q).
    rng = np.random.default_rng(seed)
    rot, _ = np.linalg.qr(rng.standard_normal((p, p)))
    lam = np.sort(rng.uniform(0, 5, p))
    lam[1:] += 0.5
    c = np.concatenate([[0.0], rng.standard_normal(p - 1)])
    c *= shrink / np.linalg.norm(c[1:] / (lam[1:] - lam[0]))
    y = c[1:] / (lam[1:] - lam[0])
    q, g = rot @ np.diag(lam) @ rot.T, rot @ c
    expected = rot @ np.concatenate([[np.sqrt(1 - y @ y)], y])
    f = _sphere.min_quadratic(q[None], g[None])[0]
    assert_allclose(quadratic(q, g, f), quadratic(q, g, expected), atol=1e-8)
    # The optima are R (+-sqrt(1 - ||y||^2), y): either sign on the lowest eigenvector.
    in_eigenbasis = rot.T @ f
    assert_allclose(np.abs(in_eigenbasis[0]), np.sqrt(1 - y @ y), atol=1e-6)
    assert_allclose(in_eigenbasis[1:], y, atol=1e-6)


def test_min_quadratic_zero_linear_term_is_the_lowest_eigenvector():
    q = np.diag([3.0, 0.2, 5.0])
    f = _sphere.min_quadratic(q[None], np.zeros((1, 3)))[0]
    assert_allclose(np.abs(f), [0.0, 1.0, 0.0], atol=1e-10)


@given(seed=st.integers(0, 2**32 - 1), p=st.integers(1, 8))
def test_min_linear_is_minus_the_normalized_vector(seed, p):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((3, p))
    f = _sphere.min_linear(g)
    assert_allclose(f, -g / np.linalg.norm(g, axis=1, keepdims=True), rtol=1e-12)
    # No point of the sphere does better (Cauchy-Schwarz), checked on random points.
    points = rng.standard_normal((500, p))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    assert ((points @ g.T).min(axis=0) >= (f * g).sum(axis=1) - 1e-12).all()


def test_min_linear_zero_gradient_gives_a_unit_filter():
    f = _sphere.min_linear(np.zeros((2, 4)))
    assert np.isfinite(f).all()
    assert_allclose(np.linalg.norm(f, axis=1), 1)


def probe_outputs(fn, n_cells):
    """Outputs (1, n_probes, d) of ``fn`` at the library's affine probes."""
    return fn(_sphere.affine_probes(n_cells).astype(np.float64))[None]


@pytest.mark.parametrize("n_cells", [1, 4, 9])
def test_fit_affine_recovers_an_affine_map(n_cells):
    rng = np.random.default_rng(n_cells)
    m = rng.standard_normal((5, n_cells))
    b = rng.standard_normal(5)
    jac, bias, residual = _sphere.fit_affine(probe_outputs(lambda f: f @ m.T + b, n_cells))
    assert jac.shape == (1, 5, n_cells)
    assert_allclose(jac[0], m, atol=1e-5)
    assert_allclose(bias[0], b, atol=1e-6)
    assert residual[0] < 1e-5


@pytest.mark.parametrize(
    "nonlinearity",
    [
        lambda z: np.maximum(z, 0),
        lambda z: z**2,
        np.tanh,
    ],
    ids=["relu", "square", "tanh"],
)
def test_fit_affine_flags_a_non_affine_map(nonlinearity):
    rng = np.random.default_rng(1)
    m = rng.standard_normal((5, 4))
    *_, residual = _sphere.fit_affine(probe_outputs(lambda f: nonlinearity(f @ m.T), 4))
    assert residual[0] > 10 * _sphere.AFFINE_RTOL


def test_fit_affine_residual_per_image():
    rng = np.random.default_rng(2)
    m = rng.standard_normal((3, 4))
    affine = probe_outputs(lambda f: f @ m.T + 1.0, 4)
    relu = probe_outputs(lambda f: np.maximum(f @ m.T, 0), 4)
    *_, residual = _sphere.fit_affine(np.concatenate([affine, relu]))
    assert residual[0] <= _sphere.AFFINE_RTOL < residual[1]


def test_relative_residual_is_relative():
    actual = np.array([[[100.0, -200.0]]])
    assert_allclose(_sphere.relative_residual(actual + 2.0, actual), [0.01])
