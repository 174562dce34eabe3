"""Which solver each L2-CAF filter came from: ``Explanation.solvers``, row by row, through
every fallback of ``L2CAFExplainer._explain_batch``, against ``solver_`` (chosen at fit).

The model: pre-extracted features of one channel on 5 x 5 cells, then GAP -> Linear(1, 1)
with a bias ``c`` -> ReLU -> Linear(1, 3). With the filter ``f`` (unit norm) the hidden
unit is ``h = relu(s + c)``, ``s = A . f / 25``. The features are made so that ``s`` is
small at every probe of the affine check (0.2 at its Gaussian probes, one cell's feature
at the others): the head is exactly affine there and ``fit`` picks the closed form. The
class-specific loss of class 0 is ``1.5 h`` (plus a constant), so the closed form turns
the filter to ``-A / ||A||``, where ``s = -||A|| / 25``: past ``-c`` the ReLU switches off
and the closed form's prediction is wrong, which the check at the solution must catch.
"""

import warnings
from collections import OrderedDict

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning

torch = pytest.importorskip("torch")
from conftest import images, make_explainer, mlp_head_cnn, tiny_cnn  # noqa: E402
from torch import nn  # noqa: E402

from sklearn_caf import DeadFilterWarning, L2CAFExplainer  # noqa: E402
from sklearn_caf._explainers.l2caf._exact import affine_probes  # noqa: E402

CELLS = 25
BIAS = 0.5  # c: the ReLU switches off where s < -0.5


def switching_head():
    """GAP -> Linear(1, 1, bias 0.5) -> ReLU -> Linear(1, 3) (weights 0.5, 1, 1; no bias)."""
    fc1, fc = nn.Linear(1, 1), nn.Linear(1, 3, bias=False)
    with torch.no_grad():
        fc1.weight.fill_(1.0)
        fc1.bias.fill_(BIAS)
        fc.weight.copy_(torch.tensor([[0.5], [1.0], [1.0]]))
    return nn.Sequential(
        OrderedDict(
            features=nn.Identity(),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc1=fc1,
            relu=nn.ReLU(),
            fc=fc,
        )
    ).eval()


def base_features():
    """(25,) features whose every probe keeps the ReLU on: ``s = 0.2`` at each check
    probe, ``|s| < 0.4`` at each one-cell probe; ``||A|| / 25`` about 1."""
    checks = affine_probes(CELLS)[1 + CELLS :].astype(np.float64)
    q, _ = np.linalg.qr(checks.T)
    v = np.random.default_rng(124).standard_normal(CELLS)
    v -= q @ (q.T @ v)  # orthogonal to the check probes
    v *= CELLS / np.linalg.norm(v)
    # plus the part in their span that moves s to 0.2 at each of them
    v += checks.T @ np.linalg.solve(checks @ checks.T, np.full(len(checks), 0.2 * CELLS))
    assert np.abs(v).max() / CELLS < 0.4 < 1 < np.linalg.norm(v) / CELLS
    return v


def features(*rows):
    return np.stack(rows).reshape(len(rows), 1, 5, 5).astype(np.float32)


def hidden(A, maps):
    """s = A . f / 25 at each row's (unit) filter."""
    return (A.reshape(len(A), -1) * maps.reshape(len(maps), -1)).sum(1) / CELLS


def test_every_row_says_which_solver_it_came_from(kit):
    v = base_features()
    affine = 0.3 * v  # ||A|| / 25 = 0.3 < c: the ReLU never switches on the sphere
    switching = v  # the closed form's s = -1 switches it off
    at_probes = v.copy()
    at_probes[7] = -0.8 * CELLS  # the probe on cell 7 already switches it off
    A = features(affine, switching, at_probes)
    ex = make_explainer(
        kit, L2CAFExplainer, model=switching_head(), layer="features", objective="class-specific"
    ).fit(A)
    assert ex.solver_ == "exact"  # fit checks the first image, affine
    e = ex.explain(A, targets=[0, 0, 0])
    assert e.solvers.shape == e.n_iter.shape == (3, 1)
    assert_array_equal(e.solvers[:, 0], ["exact", "adam", "adam"])
    assert e.n_iter[0, 0] == 0 and (e.n_iter[1:, 0] > 0).all()
    # The closed form, where it holds: -A / ||A||.
    assert_allclose(e.maps[0, 0].ravel(), -affine / np.linalg.norm(affine), atol=1e-5)
    # Adam, where it does not: a true minimum of the non-affine head, the ReLU switched off
    # (the loss 1.5 h at its least, 0); the closed form's prediction was h = 0.5 - 1 < 0.
    s = hidden(A[1:], e.maps[1:, 0])
    assert (s <= -BIAS).all(), s


def test_a_row_whose_head_ignores_the_filter_reports_adam_and_warns():
    # All-zero features: the output does not depend on the filter (a flat head), so the
    # closed form is refused and the row goes to Adam, which cannot move it.
    v = base_features()
    A = features(0.3 * v, np.zeros(CELLS))
    ex = L2CAFExplainer(model=switching_head(), layer="features", objective="class-specific")
    ex.fit(A)
    assert ex.solver_ == "exact"
    with pytest.warns(DeadFilterWarning):
        e = ex.explain(A, targets=[0, 0])
    assert_array_equal(e.solvers[:, 0], ["exact", "adam"])
    assert e.n_iter[0, 0] == 0 and e.n_iter[1, 0] > 0


def test_adam_lbfgs_without_room_for_lbfgs_is_adam():
    X = images(2, 8)
    model = mlp_head_cnn()
    ex = L2CAFExplainer(model=model, layer="conv2", max_iter=100).fit(X)
    assert ex.solver_ == "adam-lbfgs"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        e = ex.explain(X)
        reference = L2CAFExplainer(model=model, layer="conv2", max_iter=100, solver="adam")
        expected = reference.fit(X).explain(X)
    assert_array_equal(e.solvers, "adam")
    assert_array_equal(e.n_iter, expected.n_iter)
    assert_allclose(e.maps, expected.maps, atol=1e-6)
    # With room for L-BFGS, both ran.
    e = L2CAFExplainer(model=model, layer="conv2").fit(X).explain(X)
    assert_array_equal(e.solvers, "adam-lbfgs")


@pytest.mark.parametrize("solver", ["adam", "lbfgs", "adam-lbfgs"])
def test_iterative_solvers_report_themselves(solver):
    X = images(2, 8)
    ex = L2CAFExplainer(model=mlp_head_cnn(), layer="conv2", solver=solver).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        e = ex.explain(X)
    assert ex.solver_ == solver
    assert_array_equal(e.solvers, solver)


def test_a_constraint_set_after_fit_reports_adam():
    X = images(2, 8)
    ex = L2CAFExplainer(model=tiny_cnn(), layer="relu2", max_iter=50).fit(X)
    assert ex.solver_ == "exact"
    assert_array_equal(ex.explain(X).solvers, "exact")
    ex.set_params(constraint="softmax")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        e = ex.explain(X)
    assert_array_equal(e.solvers, "adam")
    assert (e.n_iter > 0).all()


def test_solvers_per_target_and_none_for_gradcam():
    from sklearn_caf import GradCAMExplainer

    X = images(3, 8)
    e = L2CAFExplainer(model=tiny_cnn(), layer="relu2", objective="class-specific", top_k=2)
    e = e.fit(X).explain(X)
    assert e.solvers.shape == (3, 2) and e.solvers.dtype.kind == "U"
    assert_array_equal(e.solvers, "exact")
    assert GradCAMExplainer(model=tiny_cnn(), layer="relu2").fit(X).explain(X).solvers is None
