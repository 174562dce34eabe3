"""L2-CAF's alternative constraints (the paper's Sec. 4.4): a softmax over the cells and a
Gaussian bump whose mean alone is optimized, against optima known in closed form or found
by an independent solver (SciPy on a NumPy formula), their invariants as Hypothesis
properties, the default ``"l2"`` unchanged, errors, dead starts, and torch/Keras parity.

Every test that runs a model runs on each installed backend (the ``kit`` fixture, see
conftest.py) unless it compares the two backends itself."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from scipy.optimize import minimize
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import InvalidParameterError

torch = pytest.importorskip("torch")
from conftest import (  # noqa: E402
    dead_start_cnn,
    images,
    import_tensorflow,
    keras_twin,
    linear_head,
    make_explainer,
    tiny_cnn,
)

from sklearn_caf import DeadFilterWarning, L2CAFExplainer  # noqa: E402

# Adam run to (float32) convergence: the optimum, not the authors' early stop.
TIGHT = {"max_iter": 2000, "tol": 1e-9}


def L2CAF(kit, **params):
    """An L2CAFExplainer on ``kit``'s backend (it takes NCHW images; see conftest)."""
    return make_explainer(kit, L2CAFExplainer, **params)


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(*args, **kwargs)


def gaussian_map(mu, shape):
    """The normalized Gaussian exp(-||p - mu||^2 / 2) / sum over the cells p, in NumPy."""
    grid = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij"))
    d2 = ((grid - np.reshape(mu, (-1,) + (1,) * len(shape))) ** 2).sum(0)
    w = np.exp(-(d2 - d2.min()) / 2)
    return w / w.sum()


def quadratic_fit(log_map, mask):
    """Least-squares fit of log_map over the cells in ``mask`` by a full quadratic in the
    cell coordinates: returns (Hessian, vertex)."""
    shape = log_map.shape
    coords = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij"), -1)
    p = coords[mask].astype(np.float64)
    n = len(shape)
    pairs = [(i, j) for i in range(n) for j in range(i, n)]
    design = np.column_stack([np.ones(len(p)), *p.T, *(p[:, i] * p[:, j] for i, j in pairs)])
    coef = np.linalg.lstsq(design, log_map[mask].astype(np.float64), rcond=None)[0]
    hess = np.zeros((n, n))
    for (i, j), c in zip(pairs, coef[1 + n :], strict=True):
        hess[i, j] += c if i != j else 2 * c
        hess[j, i] = hess[i, j]
    vertex = np.linalg.solve(hess, -coef[1 : 1 + n])
    return hess, vertex


def assert_unit_gaussians(maps, params):
    """Every map is a Gaussian bump of identity covariance centred on its mean: log(map)
    is a quadratic of Hessian -I (curvature -1/2 per axis) whose vertex is the mean."""
    n_axes = params.shape[-1]
    for m, mu in zip(maps.reshape(-1, *maps.shape[2:]), params.reshape(-1, n_axes), strict=True):
        mask = m > 1e-30
        assert mask.sum() > 2 * n_axes + 2  # enough cells to fit a quadratic
        hess, vertex = quadratic_fit(np.log(m), mask)
        assert_allclose(hess, -np.eye(n_axes), atol=2e-3)
        assert_allclose(vertex, mu, atol=2e-2 * max(1.0, float(np.abs(mu).max()) / 10))
        assert_allclose(m, gaussian_map(mu, m.shape), atol=1e-5)


# -- Softmax: known optima of linear heads -----------------------------------------------
def linear_problem(seed=0, n=3, channels=4, spatial=(3, 3), d=5):
    """Pre-extracted features A (n, C, *spatial) and a GAP + Linear head: z(w) = M w + b."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, channels, *spatial)).astype(np.float32)
    W, b = rng.standard_normal((d, channels)), rng.standard_normal(d)
    M = np.einsum("dc,ncp->ndp", W, A.reshape(n, channels, -1).astype(np.float64))
    return A, linear_head(W, b), M / np.prod(spatial)


def test_softmax_class_specific_concentrates_on_the_best_cell(kit):
    A, model, M = linear_problem(seed=1)
    targets = np.array([0, 3, 4])
    # Eq. 2 is linear in the weights w: sum_p w_p c_p + const, c = M^T (1 - 2 e_c); its
    # minimum over the simplex is all the weight on the cell of the smallest c_p.
    c = np.einsum("ndp,nd->np", M, 1 - 2 * np.eye(5)[targets])
    expected = np.eye(9)[c.argmin(axis=1)]
    ex = L2CAF(kit, model=model, objective="class-specific", constraint="softmax", **TIGHT)
    e = ex.fit(A).explain(A, targets=targets)
    assert ex.solver_ == "adam"
    assert e.maps.shape == (3, 1, 3, 3) and e.params is None
    assert_allclose(e.maps.reshape(3, -1), expected, atol=1e-3)


def test_softmax_class_oblivious_hand_computed_optima(kit):
    # One channel, one output z = mean over cells of w_p a_p (a 1x2 map), target the
    # unfiltered mean: the loss is ((w . a - sum(a)) / 2)^2 with w on the simplex.
    # a = (3, -1): 3 w0 - (1 - w0) = 2 gives w = (3/4, 1/4), an interior optimum.
    # a = (5, 1): 5 w0 + (1 - w0) = 6 needs w0 = 5/4; the best feasible is w = (1, 0).
    A = np.array([[3.0, -1.0], [5.0, 1.0]], np.float32).reshape(2, 1, 1, 2)
    model = linear_head([[1.0]], [0.5])
    e = quiet(L2CAF(kit, model=model, constraint="softmax", **TIGHT).fit(A).explain, A)
    assert_allclose(e.maps.reshape(2, 2), [[0.75, 0.25], [1.0, 0.0]], atol=1e-4)


def test_softmax_class_oblivious_equals_a_simplex_qp_solver(kit):
    # M is 6 x 4 (full column rank): the loss mean_j (M (w - 1))_j^2 is strictly convex on
    # the simplex, so SLSQP (an independent solver, on the weights themselves) finds the
    # one optimum that Adam on the logits must reach.
    A, model, M = linear_problem(seed=4, n=3, channels=3, spatial=(2, 2), d=6)
    # Quiet: the weights of cells whose optimum is 0 keep shrinking, as slowly as they
    # matter, so the tight tolerance may not be met.
    e = quiet(L2CAF(kit, model=model, constraint="softmax", **TIGHT).fit(A).explain, A)
    for m, w in zip(M, e.maps.reshape(3, -1), strict=True):

        def loss(w, m=m):
            return ((m @ (w - 1)) ** 2).mean()

        ref = minimize(
            loss,
            np.full(4, 0.25),
            method="SLSQP",
            bounds=[(0, 1)] * 4,
            constraints={"type": "eq", "fun": lambda w: w.sum() - 1},
            options={"ftol": 1e-14, "maxiter": 500},
        )
        # Cells whose optimal weight is 0 are approached, never reached, by a softmax.
        assert loss(w) <= ref.fun + 1e-4 * max(1.0, ref.fun)
        # The loss is flat along some directions (M's small singular values): the weights
        # agree less tightly than the loss values.
        assert_allclose(w, ref.x, atol=5e-3)


# -- Gaussian: known optima ------------------------------------------------------------------
def bright_cell(cell, shape=(7, 7)):
    """Features (1, 1, *shape): zero but for one cell. With ``model=linear_head([[1], [-1]],
    0)`` and class 0, Eq. 2 is ``-2 w_cell / cells``: the Gaussian must put as much of its
    (unit) mass as it can on that cell."""
    A = np.zeros((1, 1, *shape), np.float32)
    A[(0, 0, *cell)] = 1.0
    return A


BRIGHT_HEAD = ([[1.0], [-1.0]], [0.0, 0.0])


def best_mean(cell, shape, start):
    """The independent answer: BFGS on the NumPy formula of the normalized Gaussian."""
    ref = minimize(
        lambda mu: -gaussian_map(mu, shape)[cell], start, method="BFGS", options={"gtol": 1e-12}
    )
    return ref.x


def test_gaussian_moves_to_a_bright_centre_cell(kit):
    # By symmetry the mean that puts most mass on the centre cell is the centre itself;
    # starting elsewhere, Adam must walk there.
    A, model = bright_cell((3, 3)), linear_head(*BRIGHT_HEAD)
    ex = L2CAF(
        kit,
        model=model,
        objective="class-specific",
        constraint="gaussian",
        init=np.array([1.5, 4.5]),
        **TIGHT,
    )
    e = ex.fit(A).explain(A, targets=[0])
    assert e.params.shape == (1, 1, 2)
    assert_allclose(e.params[0, 0], [3.0, 3.0], atol=1e-3)
    assert_allclose(e.maps[0, 0], gaussian_map([3, 3], (7, 7)), atol=1e-5)


def test_gaussian_optimum_near_a_border_matches_scipy(kit):
    # Near the top border the grid truncates the bump: the best mean is not the bright
    # cell (1, 4) itself but (0.826..., 4.014...), pulled outwards, where the bump
    # loses less of its mass past the border than it gains on the cell.
    A, model = bright_cell((1, 4)), linear_head(*BRIGHT_HEAD)
    ex = L2CAF(kit, model=model, objective="class-specific", constraint="gaussian", **TIGHT)
    e = ex.fit(A).explain(A, targets=[0])
    expected = best_mean((1, 4), (7, 7), np.array([3.0, 3.0]))
    assert_allclose(expected, [0.8263, 4.0145], atol=1e-3)
    assert_allclose(e.params[0, 0], expected, atol=1e-3)
    assert np.unravel_index(e.maps[0, 0].argmax(), (7, 7)) == (1, 4)


def test_gaussian_mean_leaves_the_grid_for_a_corner_cell(kit):
    # Documented: the mean is not confined to the grid. All mass on the corner is the
    # limit mu -> (-inf, -inf); the map stays finite (no 0/0) and piles on the corner.
    A, model = bright_cell((0, 0)), linear_head(*BRIGHT_HEAD)
    ex = L2CAF(kit, model=model, objective="class-specific", constraint="gaussian")
    e = quiet(ex.fit(A).explain, A, targets=[0])
    assert (e.params < -3).all()
    assert np.isfinite(e.maps).all()
    assert e.maps[0, 0, 0, 0] > 0.99
    assert_allclose(e.maps.sum(), 1.0, rtol=1e-5)


def test_gaussian_class_oblivious_matches_scipy_from_the_same_start(kit):
    # A seed whose local optima near the start are inside the grid. The loss is not convex
    # in the mean: with small steps Adam follows the same descent as BFGS into the same
    # local optimum; the authors' large first steps (0.5 cells) may jump to another one,
    # here a lower one outside the grid.
    A, model, M = linear_problem(seed=12, n=2, channels=3, spatial=(5, 6), d=4)

    def loss(mu, m):
        return ((m @ (gaussian_map(mu, (5, 6)).ravel() - 1)) ** 2).mean()

    small = L2CAF(kit, model=model, constraint="gaussian", learning_rate=0.1, **TIGHT)
    e_small = small.fit(A).explain(A)
    e_default = L2CAF(kit, model=model, constraint="gaussian", **TIGHT).fit(A).explain(A)
    for i, m in enumerate(M):
        ref = minimize(
            loss, np.array([2.0, 2.5]), args=(m,), method="BFGS", options={"gtol": 1e-12}
        )
        assert_allclose(e_small.params[i, 0], ref.x, atol=1e-3)
        assert loss(e_default.params[i, 0], m) <= ref.fun + 1e-6


# -- Invariants ------------------------------------------------------------------------------
# Properties of the core's math, checked on torch models (a Keras model per example would
# cost a trace each); the parity tests below give Keras the same maps.
@given(
    seed=st.integers(0, 2**16),
    layer=st.sampled_from(["conv2", "relu2", "relu1"]),
    objective=st.sampled_from(["class-oblivious", "class-specific"]),
    size=st.sampled_from([6, 8]),
)
def test_softmax_maps_are_non_negative_and_sum_to_one(seed, layer, objective, size):
    X = images(2, size, seed=seed)
    ex = L2CAFExplainer(
        model=tiny_cnn(seed=seed % 7),
        layer=layer,
        objective=objective,
        constraint="softmax",
        max_iter=60,
    )
    e = quiet(ex.fit(X).explain, X)
    assert e.maps.shape == (2, 1, size, size) and e.params is None
    assert (e.maps >= 0).all()
    assert_allclose(e.maps.sum(axis=(2, 3)), 1.0, rtol=1e-5)
    assert e.heatmaps.dtype == np.float32
    assert (e.heatmaps >= 0).all() and (e.heatmaps <= 1).all()


@given(
    seed=st.integers(0, 2**16),
    layer=st.sampled_from(["conv2", "relu2", "relu1"]),
    objective=st.sampled_from(["class-oblivious", "class-specific"]),
    size=st.sampled_from([(6, 6), (8, 5)]),
)
def test_gaussian_maps_are_unit_covariance_bumps_at_their_means(seed, layer, objective, size):
    X = images(2, size, seed=seed)
    ex = L2CAFExplainer(
        model=tiny_cnn(seed=seed % 7),
        layer=layer,
        objective=objective,
        constraint="gaussian",
        max_iter=60,
    )
    e = quiet(ex.fit(X).explain, X)
    assert e.maps.shape == (2, 1, *size)
    assert e.params.shape == (2, 1, 2) and e.params.dtype == np.float32
    assert np.isfinite(e.params).all()
    assert_allclose(e.maps.sum(axis=(2, 3)), 1.0, rtol=1e-5)
    assert_unit_gaussians(e.maps, e.params)


def test_gaussian_on_volumes_has_one_mean_coordinate_per_axis():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool3d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).eval()
    X = np.random.default_rng(0).random((2, 1, 5, 6, 7), dtype=np.float32)
    ex = L2CAFExplainer(model=net, layer="1", constraint="gaussian", max_iter=100)
    e = quiet(ex.fit(X).explain, X)
    assert e.maps.shape == (2, 1, 5, 6, 7) and e.params.shape == (2, 1, 3)
    assert e.heatmaps.shape == (2, 1, 5, 6, 7)
    assert_unit_gaussians(e.maps, e.params)


def test_gaussian_starts_at_the_grid_centre_and_init_sets_the_start(kit):
    X = images(2, (6, 9), seed=3)
    ex = L2CAF(kit, model=tiny_cnn(), layer="relu2", constraint="gaussian", max_iter=1)
    e = quiet(ex.fit(X).explain, X)
    # One Adam step of the authors' learning rate moves each coordinate by at most 0.5.
    assert (np.abs(e.params - [2.5, 4.0]) <= 0.5 + 1e-6).all()
    start = np.array([1.0, 7.0])
    ex.set_params(init=start, max_iter=1)
    assert (np.abs(quiet(ex.explain, X).params - start) <= 0.5 + 1e-6).all()
    ex.set_params(init="uniform", random_state=0)
    first = quiet(ex.explain, X).params
    assert_array_equal(quiet(ex.explain, X).params, first)


def test_images_of_another_size_get_their_own_grid(kit):
    ex = L2CAF(kit, model=tiny_cnn(), layer="relu2", constraint="gaussian", max_iter=60)
    quiet(ex.fit, images(2, 8))
    e = quiet(ex.explain, images(2, 12, seed=1))
    assert e.maps.shape == (2, 1, 12, 12)
    assert_unit_gaussians(e.maps, e.params)


@pytest.mark.parametrize("constraint", ["softmax", "gaussian"])
@pytest.mark.parametrize("objective", ["class-oblivious", "class-specific"])
def test_fast_and_vanilla_variants_agree(constraint, objective, kit):
    X = images(2, 8, seed=2)
    maps, params = [], []
    for variant in ("fast", "vanilla"):
        ex = L2CAF(
            kit,
            model=tiny_cnn(),
            layer="conv2",
            objective=objective,
            constraint=constraint,
            variant=variant,
            max_iter=100,
            tol=0,
        )
        e = quiet(ex.fit(X).explain, X)
        maps.append(e.maps)
        params.append(e.params)
    assert_allclose(maps[0], maps[1], atol=1e-4)
    if constraint == "gaussian":
        assert_allclose(params[0], params[1], atol=1e-3)


@pytest.mark.parametrize("constraint", ["softmax", "gaussian"])
def test_batched_equals_one_by_one(constraint, kit):
    X = images(3, 8, seed=6)
    ex = L2CAF(
        kit,
        model=tiny_cnn(),
        layer="relu2",
        objective="class-specific",
        top_k=2,
        constraint=constraint,
        max_iter=80,
    )
    batched = quiet(ex.fit(X).explain, X)
    for i in range(3):
        alone = quiet(ex.explain, X[i : i + 1])
        assert_allclose(alone.maps[0], batched.maps[i], atol=1e-5)


# -- The default is today's L2-CAF ------------------------------------------------------------
@pytest.mark.parametrize("solver", ["exact", "adam", "lbfgs", "adam-lbfgs"])
def test_l2_constraint_is_the_default_bit_for_bit(solver, kit):
    A, model, M = linear_problem(seed=1, n=4, d=6)
    targets = np.array([0, 3, 5, 2])
    results = []
    for params in ({}, {"constraint": "l2"}):
        ex = L2CAF(kit, model=model, objective="class-specific", solver=solver, **params)
        results.append(quiet(ex.fit(A).explain, A, targets=targets))
    default, explicit = results
    assert_array_equal(explicit.maps, default.maps)
    assert_array_equal(explicit.n_iter, default.n_iter)
    assert explicit.params is None and default.params is None
    # The explicit optimum of tests/explainers/test_l2caf.py: -g / ||g||, g = M^T (1 - 2 e_c).
    g = np.einsum("ndp,nd->np", M, 1 - 2 * np.eye(6)[targets])
    expected = -g / np.linalg.norm(g, axis=1, keepdims=True)
    if solver == "exact":
        assert_allclose(explicit.maps.reshape(4, -1), expected, atol=1e-5)


# -- Errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["exact", "lbfgs", "adam-lbfgs"])
@pytest.mark.parametrize("constraint", ["softmax", "gaussian"])
def test_sphere_solvers_reject_other_constraints(solver, constraint):
    ex = L2CAFExplainer(model=tiny_cnn(), layer="relu2", constraint=constraint, solver=solver)
    with pytest.raises(ValueError, match=rf"solver='{solver}'.*constraint='{constraint}'"):
        ex.fit(images(1))


def test_unknown_constraint_is_rejected():
    ex = L2CAFExplainer(model=tiny_cnn(), layer="relu2", constraint="l1")
    with pytest.raises(InvalidParameterError, match="constraint"):
        ex.fit(images(1))


@pytest.mark.parametrize("shape", [(8, 8), (3,), (1,)])
def test_gaussian_init_array_must_be_a_mean(shape):
    ex = L2CAFExplainer(
        model=tiny_cnn(), layer="relu2", constraint="gaussian", init=np.zeros(shape)
    )
    with pytest.raises(ValueError, match=r"init.*shape \(2,\)"):
        ex.fit(images(1))


def test_changing_the_constraint_after_fit_is_honoured(kit):
    # Fitted with L2 on an affine head, the solver is the closed form; a softmax set
    # afterwards must not be "solved" by it (that would return unit-norm filters).
    X = images(2, 8, seed=4)
    ex = L2CAF(kit, model=tiny_cnn(), layer="relu2").fit(X)
    assert ex.solver_ == "exact"
    e = quiet(ex.set_params(constraint="softmax").explain, X)
    assert_allclose(e.maps.sum(axis=(2, 3)), 1.0, rtol=1e-5)
    assert (e.n_iter > 0).all()
    ex.set_params(solver="exact")
    with pytest.raises(ValueError, match=r"solver='exact'.*constraint='softmax'"):
        ex.explain(X)


# -- Dead starts -----------------------------------------------------------------------------
X_DEAD = images(3, 8, seed=5)


def softmax_start_gradient(net, X):
    """The class-oblivious loss's gradient at the uniform softmax start, in plain torch."""
    with torch.no_grad():
        a = net.relu1(net.conv1(torch.as_tensor(X)))
        z0 = net(torch.as_tensor(X))
    f = torch.ones(len(X), 64, requires_grad=True)
    w = torch.softmax(f, dim=1).reshape(-1, 1, 8, 8)
    loss = ((net[2:](a * w) - z0) ** 2).mean(1).sum()
    (grad,) = torch.autograd.grad(loss, f)
    return grad.numpy()


def test_a_dead_softmax_start_restarts_on_the_strongest_cells(kit):
    net = dead_start_cnn(X_DEAD)
    assert (softmax_start_gradient(net, X_DEAD) == 0).all()  # dead, checked by torch alone
    ex = L2CAF(kit, model=net, layer="relu1", constraint="softmax", max_iter=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeadFilterWarning)
        e = quiet(ex.fit(X_DEAD).explain, X_DEAD)
    flat = e.maps.reshape(3, -1)
    assert (flat.max(axis=1) > 2 * flat.min(axis=1)).all()  # not uniform


@pytest.mark.parametrize("constraint", ["softmax", "gaussian"])
def test_a_start_no_restart_revives_is_reported(constraint, kit):
    net = dead_start_cnn(X_DEAD, revivable=False)
    ex = L2CAF(kit, model=net, layer="relu1", constraint=constraint, max_iter=60)
    with pytest.warns(DeadFilterWarning, match=r"layer='relu1'.*3 constant or unmoved map"):
        e = quiet(ex.fit(X_DEAD).explain, X_DEAD)
    if constraint == "gaussian":  # reported although the bumps are not constant maps
        flat = e.maps.reshape(3, -1)
        assert (flat.max(axis=1) > 2 * flat.min(axis=1)).all()


# -- torch / Keras parity --------------------------------------------------------------------
@pytest.fixture(scope="module")
def twins():
    import_tensorflow()
    pytest.importorskip("sklearn_caf_tensorflow")
    net = tiny_cnn(n_classes=10, seed=3)
    return net, keras_twin(net)


@pytest.mark.parametrize("constraint", ["softmax", "gaussian"])
@pytest.mark.parametrize(
    ("layer", "params"),
    [
        ("relu2", {"objective": "class-oblivious"}),
        ("conv2", {"objective": "class-specific", "top_k": 2}),
        ("conv2", {"variant": "vanilla"}),
    ],
)
def test_torch_keras_parity(twins, constraint, layer, params):
    # A fixed start and a fixed number of Adam steps: the same maps and means.
    X = images(3, 12, seed=12)
    results = []
    for model, x in ((twins[0], X), (twins[1], X.transpose(0, 2, 3, 1))):
        ex = L2CAFExplainer(
            model=model, layer=layer, constraint=constraint, max_iter=150, tol=0, **params
        )
        results.append(quiet(ex.fit(x).explain, x))
    e_torch, e_tf = results
    assert_array_equal(e_tf.n_iter, e_torch.n_iter)
    assert_allclose(e_tf.maps, e_torch.maps, atol=1e-4)
    if constraint == "gaussian":
        assert_allclose(e_tf.params, e_torch.params, atol=1e-3)
    assert np.abs(e_tf.heatmaps - e_torch.heatmaps).max() <= 1e-3
