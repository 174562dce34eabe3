"""L2-CAF never returns a uniform map silently: dead starts (a head whose units the
attenuation of a unit-norm filter switches off) are detected, restarted from the best
one-cell filter, and reported with a DeadFilterWarning naming the layer when that fails.

The model (conftest.dead_start_cnn) is built to fail that way: the gradient at the
uniform start is checked to be exactly zero with torch autograd, independently of the
library. Every test runs on each installed backend (the ``kit`` fixture)."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from conftest import dead_start_cnn, images, make_explainer  # noqa: E402

from sklearn_caf import DeadFilterWarning, L2CAFExplainer  # noqa: E402

X = images(3, 8, seed=5)


def filtered_logits(net, X, f):
    """The head on features filtered by the unit-norm ``f`` (n, h, w), in plain torch."""
    with torch.no_grad():
        a = net.relu1(net.conv1(torch.as_tensor(X)))
    f = torch.as_tensor(f, dtype=torch.float32)
    f = f / f.flatten(1).norm(dim=1)[:, None, None]
    return net[2:](a * f[:, None])


def oblivious_loss(net, X, f):
    with torch.no_grad():
        z0 = net(torch.as_tensor(X))
    return ((filtered_logits(net, X, f) - z0) ** 2).mean(1)


def strongest_cells_start(net, X, objective="class-oblivious"):
    """The documented restart, computed here with torch alone: the uniform filter on the
    r cells of largest feature norm, r = 32, 16, ..., 1, the largest r with a gradient.
    Returns (filters (n, 8, 8), r per image; 0 where none has a gradient)."""
    with torch.no_grad():
        norms = net.relu1(net.conv1(torch.as_tensor(X))).norm(dim=1).flatten(1).numpy()
        z0 = net(torch.as_tensor(X))
    starts, sizes = np.ones((len(X), 64), np.float32), np.zeros(len(X), int)
    for i in range(len(X)):
        for r in (32, 16, 8, 4, 2, 1):
            f = np.zeros(64, np.float32)
            f[np.argsort(-norms[i])[:r]] = 1
            ft = torch.as_tensor(f.reshape(1, 8, 8)).requires_grad_(True)
            z = filtered_logits(net, X[i : i + 1], ft)
            if objective == "class-oblivious":
                loss = ((z - z0[i : i + 1]) ** 2).mean()
            else:
                c = int(z0[i].argmax())
                loss = z.sum() - 2 * z[0, c]
            (grad,) = torch.autograd.grad(loss, ft)
            if grad.abs().sum() > 0:
                starts[i], sizes[i] = f, r
                break
    return starts.reshape(-1, 8, 8), sizes


@pytest.mark.parametrize("revivable", [True, False])
def test_the_model_has_a_dead_start(revivable):
    net = dead_start_cnn(X, revivable=revivable)
    f = torch.ones(len(X), 8, 8, requires_grad=True)
    (grad,) = torch.autograd.grad(oblivious_loss(net, X, f).sum(), f)
    assert torch.count_nonzero(grad) == 0
    # One-cell filters have no tangent gradient either (a 1x1 head: cells do not interact).
    e = torch.zeros(len(X), 64)
    e[:, 0] = 1
    e = e.reshape(len(X), 8, 8).requires_grad_(True)
    (grad,) = torch.autograd.grad(oblivious_loss(net, X, e).sum(), e)
    assert torch.count_nonzero(grad) == 0
    _, sizes = strongest_cells_start(net, X)
    assert ((sizes > 1) == revivable).all()


@pytest.mark.parametrize("objective", ["class-oblivious", "class-specific"])
@pytest.mark.parametrize("solver", ["adam", "auto"])
def test_a_dead_start_is_restarted_on_the_strongest_cells(objective, solver, kit):
    net = dead_start_cnn(X)
    params = dict(model=net, layer="relu1", objective=objective, solver=solver, max_iter=300)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeadFilterWarning)
        e = make_explainer(kit, L2CAFExplainer, **params).fit(X).explain(X)
    maps = np.abs(e.maps[:, 0]).reshape(len(X), -1)
    assert (maps.max(1) - maps.min(1) > 0.1 * maps.max(1)).all()
    # A restarted filter comes from the solver that ran from the restart.
    assert (e.solvers == ("adam" if solver == "adam" else "adam-lbfgs")).all()
    if objective == "class-oblivious":
        loss = oblivious_loss(net, X, e.maps[:, 0]).detach().numpy()
        uniform = oblivious_loss(net, X, np.ones((len(X), 8, 8))).detach().numpy()
        assert (loss < uniform).all()
    # The documented recovery: the same as starting from that filter by hand.
    starts, _ = strongest_cells_start(net, X, objective)
    for i in range(len(X)):
        by_hand = make_explainer(kit, L2CAFExplainer, **params, init=starts[i])
        ref = by_hand.fit(X[i : i + 1]).explain(X[i : i + 1])
        # L-BFGS (the default's second phase) may stop a step earlier or later in a batch
        # than alone, where float32 rounding flips its stopping test near the end.
        np.testing.assert_allclose(e.maps[i], ref.maps[0], atol=1e-5 if solver == "adam" else 1e-3)


@pytest.mark.parametrize("solver", ["adam", "auto"])
def test_an_unrecoverable_dead_start_warns_naming_the_layer(solver, kit):
    net = dead_start_cnn(X, revivable=False)
    est = make_explainer(kit, L2CAFExplainer, model=net, layer="relu1", solver=solver)
    with pytest.warns(DeadFilterWarning, match=r"layer='relu1'.*3 constant map\(s\) of 3"):
        e = est.fit(X).explain(X)
    assert np.allclose(np.abs(e.maps), 1 / 8)  # returned, but said


def test_live_starts_are_not_touched(kit):
    """On a live start the recovery does nothing: same maps as the plain Adam loop
    started from the same filter (the loss is checked once before it)."""
    net = dead_start_cnn(X)
    start = np.eye(64, dtype=np.float32)[27].reshape(8, 8)
    params = dict(model=net, layer="relu1", solver="adam", init=start, max_iter=60, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeadFilterWarning)
        warnings.simplefilter("ignore", UserWarning)
        e = make_explainer(kit, L2CAFExplainer, **params).fit(X).explain(X)
    assert (e.n_iter == 60).all()
