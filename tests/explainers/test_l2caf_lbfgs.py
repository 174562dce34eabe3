"""``solver="lbfgs"``: Riemannian L-BFGS on the unit sphere (sklearn_caf._explainers.l2caf._lbfgs).

Checked against known optima (linear heads: closed form, as in test_l2caf.py), against the
exact solver on affine CNN heads, against the same model in Keras (parity at a layer
whose head is not affine), and for its unit-norm output and per-row independence."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_less

torch = pytest.importorskip("torch")
from conftest import (  # noqa: E402
    images,
    import_tensorflow,
    keras_twin,
    linear_head,
    make_explainer,
    tiny_cnn,
)
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from sklearn_caf import L2CAFExplainer  # noqa: E402
from sklearn_caf._explainers.l2caf._lbfgs import _two_loop  # noqa: E402

TIGHT = {"solver": "lbfgs", "tol": 1e-12, "max_iter": 500}


def cosine(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def linear_problem(seed, n=4, channels=4, spatial=(3, 3), d=6):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, channels, *spatial)).astype(np.float32)
    W, b = rng.standard_normal((d, channels)), rng.standard_normal(d)
    M = np.einsum("dc,ncp->ndp", W, A.reshape(n, channels, -1).astype(np.float64))
    return A, linear_head(W, b), M / np.prod(spatial)


def test_class_specific_optimum_of_a_linear_head(kit):
    A, model, M = linear_problem(seed=1)
    targets = np.array([0, 3, 5, 2])
    g = np.einsum("ndp,nd->np", M, 1 - 2 * np.eye(6)[targets])
    expected = -g / np.linalg.norm(g, axis=1, keepdims=True)  # -g / ||g||: closed form
    est = make_explainer(
        kit, L2CAFExplainer, model=model, objective="class-specific", **TIGHT
    ).fit(A)
    e = est.explain(A, targets=targets)
    assert est.solver_ == "lbfgs"
    assert (cosine(e.maps, expected) > 0.99999).all()
    assert (e.n_iter < 100).all()  # a linear function on the sphere: few steps


def test_class_oblivious_matches_the_exact_trust_region_solution(kit):
    A, model, _ = linear_problem(seed=2)
    exact = make_explainer(kit, L2CAFExplainer, model=model, solver="exact").fit(A).explain(A)
    e = make_explainer(kit, L2CAFExplainer, model=model, **TIGHT).fit(A).explain(A)
    assert (cosine(e.maps, exact.maps) > 0.9999).all()
    np.testing.assert_allclose(np.linalg.norm(e.maps.reshape(4, -1), axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("objective", ["class-oblivious", "class-specific"])
def test_lbfgs_and_exact_agree_on_an_affine_cnn_head(objective, kit):
    X = images(4, 8, seed=5)
    params = dict(model=tiny_cnn(), layer="relu2", objective=objective)
    exact = make_explainer(kit, L2CAFExplainer, **params).fit(X).explain(X)
    e = make_explainer(kit, L2CAFExplainer, **params, **TIGHT).fit(X).explain(X)
    assert (cosine(e.maps, exact.maps) > 0.999).all()


def test_batched_equals_one_by_one(kit):
    """Every row takes its own line-search decisions: a batch gives its rows' maps."""
    X = images(3, 8, seed=6)
    est = make_explainer(
        kit, L2CAFExplainer, model=tiny_cnn(seed=1), layer="relu1", solver="lbfgs"
    ).fit(X)
    batch = est.explain(X)
    for i in range(len(X)):
        one = est.explain(X[i : i + 1])
        # The same point; the step counts may differ where float32 rounding (another
        # kernel for another batch size) flips a stopping test near the end.
        np.testing.assert_allclose(one.maps[0], batch.maps[i], atol=2e-4)


def test_two_loop_without_pairs_is_steepest_descent_and_with_pairs_inverts_a_quadratic():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((2, 5))
    none = np.zeros((2, 3), dtype=bool)
    np.testing.assert_allclose(_two_loop(g, np.zeros((2, 3, 5)), np.zeros((2, 3, 5)), none), -g)
    # On a quadratic with Hessian H, pairs (s, H s) along H-conjugate directions (BFGS's
    # hereditary property) recover H^-1 exactly: here the axes, in a random order.
    H = np.diag([1.0, 2.0, 3.0, 4.0, 5.0])
    s = np.eye(5)[rng.permutation(5)][None]
    y = s @ H
    d = _two_loop(g[:1], s, y, np.ones((1, 5), dtype=bool))
    np.testing.assert_allclose(d[0], -np.linalg.solve(H, g[0]), rtol=1e-8)


def test_lbfgs_parity_at_a_non_affine_layer():
    """torch and Keras twins take the same steps at relu1 (conv, ReLU, GAP, linear after)."""
    import_tensorflow()
    pytest.importorskip("sklearn_caf_tensorflow")
    net = tiny_cnn(n_classes=10, seed=3)
    X = images(4, 12, seed=12)
    for objective in ("class-oblivious", "class-specific"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            params = dict(layer="relu1", objective=objective, solver="lbfgs")
            e_torch = L2CAFExplainer(model=net, **params).fit(X).explain(X)
            nhwc = X.transpose(0, 2, 3, 1)
            e_tf = L2CAFExplainer(model=keras_twin(net), **params).fit(nhwc).explain(nhwc)
        assert_array_less(np.abs(e_tf.heatmaps - e_torch.heatmaps).max(), 1e-3)
