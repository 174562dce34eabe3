"""``solver="adam-lbfgs"``, the default on heads that are not affine in the filter
(sklearn_caf._explainers.l2caf._adam_lbfgs): the authors' Adam for its first iterations,
then L-BFGS.

Its warm start is exactly the authors' trajectory (the first iterations of
``torch.optim.Adam`` with the linear decay over ``max_iter``, computed with torch alone, up
to ``_WARM_ITER`` or until the filter's map settles);
its result is the optimum that a long run of the authors' Adam reaches, in far fewer head
evaluations; ``solver="auto"`` picks it where the head is not affine; and the torch and
Keras twins give the same maps."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_less

torch = pytest.importorskip("torch")
from conftest import (  # noqa: E402
    images,
    import_tensorflow,
    keras_twin,
    make_explainer,
    mlp_head_cnn,
    tiny_cnn,
)
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from test_l2caf_adam_reference import FINAL, LR, START, X, torch_adam  # noqa: E402

import sklearn_caf._explainers.l2caf._adam_lbfgs as adam_lbfgs  # noqa: E402
from sklearn_caf import L2CAFExplainer  # noqa: E402
from sklearn_caf._explainers.l2caf._adam import MapSettle, RowsResult  # noqa: E402
from sklearn_caf._explainers.l2caf._explainer import _WARM_ITER  # noqa: E402


def correlation(a, b):
    a, b = np.abs(a).reshape(len(a), -1), np.abs(b).reshape(len(b), -1)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def _assert_the_authors_adam_until_settled(net, objective, e, horizon, warm):
    """Each row is torch.optim.Adam's filter after its own ``n_iter`` iterations of the
    decay over ``horizon``, and ``n_iter`` is where the map-stability rule first held
    (checked every 10 iterations from 20: ``|f|`` correlated at ``tau`` or more with
    ``|f|`` 10 iterations earlier), or ``warm`` if it never did."""
    tau = MapSettle().tau
    n = e.n_iter[:, 0]
    steps = sorted({int(t) for t in n} | set(range(10, int(n.max()) + 1, 10)))
    traj = {t: torch_adam(net, objective, t, horizon=horizon, normalize=False) for t in steps}
    for i, t in enumerate(n):
        np.testing.assert_allclose(
            e.maps[i, 0], traj[t][i] / np.linalg.norm(traj[t][i]), rtol=1e-4, atol=1e-5
        )
        checks = [c for c in range(20, int(t) + 1, 10)]
        settled = [
            correlation(traj[c][i : i + 1], traj[c - 10][i : i + 1])[0] >= tau for c in checks
        ]
        if t < warm:
            assert settled and settled[-1], (i, t)
            assert not any(settled[:-1]), (i, t)  # it stops at the first settled check
        else:
            assert t == warm and not any(settled), (i, t)


@pytest.mark.parametrize("objective", ["class-oblivious", "class-specific"])
def test_the_warm_start_is_the_authors_adam_until_its_map_settles(objective, kit, monkeypatch):
    """Stop right after the warm start (an L-BFGS that returns its start): each filter is
    torch.optim.Adam's after its own number of iterations of the decay over ``max_iter``,
    at most ``_WARM_ITER``: where its map settled (see MapSettle)."""
    max_iter = 300
    starts = []

    def no_polish(bound, problem, x0, options, value_and_grad=None):
        starts.append(options)
        m = len(x0)
        return RowsResult(x0, np.zeros(m), np.zeros(m, dtype=int), np.ones(m, dtype=bool))

    monkeypatch.setattr(adam_lbfgs, "minimize_rows_lbfgs", no_polish)
    net = mlp_head_cnn(seed=7)
    warm = _WARM_ITER[objective]
    est = make_explainer(
        kit,
        L2CAFExplainer,
        model=net,
        layer="relu2",
        objective=objective,
        solver="adam-lbfgs",
        init=START,
        max_iter=max_iter,
        tol=0,  # no row stops at Adam's loss checks (iterations 51, 101) before the end
        learning_rate=LR,
        final_learning_rate=FINAL,
    )
    e = est.fit(X).explain(X)
    # L-BFGS gets what is left of max_iter after the longest warm start.
    assert [o.max_eval for o in starts] == [max_iter - warm]
    _assert_the_authors_adam_until_settled(net, objective, e, max_iter, warm)


def test_max_iter_below_the_warm_start_is_plain_adam(kit):
    short = _WARM_ITER["class-oblivious"] // 2
    params = dict(model=tiny_cnn(seed=2), layer="conv2", max_iter=short, tol=0)
    X = images(3, 8, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = make_explainer(kit, L2CAFExplainer, **params).fit(X).explain(X)
        adam = make_explainer(kit, L2CAFExplainer, solver="adam", **params).fit(X).explain(X)
    np.testing.assert_array_equal(ours.maps, adam.maps)
    assert (ours.n_iter == short).all()


@pytest.mark.parametrize("objective", ["class-oblivious", "class-specific"])
@pytest.mark.parametrize(
    ("factory", "layer"), [(mlp_head_cnn, "relu2"), (tiny_cnn, "conv1"), (tiny_cnn, "conv2")]
)
def test_reaches_the_long_adam_optimum_in_fewer_evaluations(factory, layer, objective, kit):
    """The default on a non-affine head ends where 1000 iterations of the authors' Adam
    (``tol=0``, the same start) end: maps correlated at 0.99 or more, on every image."""
    X = images(4, 8, seed=8)
    params = dict(model=factory(seed=1), layer=layer, objective=objective)
    est = make_explainer(kit, L2CAFExplainer, **params).fit(X)
    assert est.solver_ == "adam-lbfgs"
    ours = est.explain(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        long = make_explainer(kit, L2CAFExplainer, solver="adam", max_iter=1000, tol=0, **params)
        reference = long.fit(X).explain(X)
    assert (correlation(ours.maps, reference.maps) >= 0.99).all()
    assert (ours.n_iter < _WARM_ITER[objective] + 40).all()


def test_torch_keras_parity_at_a_non_affine_layer_with_the_default():
    """The same model in torch and Keras: the default solver takes the same decisions."""
    import_tensorflow()
    pytest.importorskip("sklearn_caf_tensorflow")
    net = tiny_cnn(n_classes=10, seed=3)
    X = images(4, 12, seed=12)
    nhwc = X.transpose(0, 2, 3, 1)
    for objective in ("class-oblivious", "class-specific"):
        params = dict(layer="conv2", objective=objective)
        e_torch = L2CAFExplainer(model=net, **params).fit(X)
        e_tf = L2CAFExplainer(model=keras_twin(net), **params).fit(nhwc)
        assert e_torch.solver_ == e_tf.solver_ == "adam-lbfgs"
        a, b = e_torch.explain(X), e_tf.explain(nhwc)
        # 150 Adam iterations then L-BFGS's host-side decisions amplify float32 rounding
        # of the two frameworks' kernels a little more than Adam alone does (1e-3 there).
        assert_array_less(np.abs(a.heatmaps - b.heatmaps).max(), 5e-3)
        assert (correlation(a.maps, b.maps) > 0.9999).all()
