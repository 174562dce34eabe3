"""``solver="adam"`` is the authors' optimizer, pinned down step by step: the filters after
T iterations equal those of ``torch.optim.Adam`` (bias-corrected moments) with the
learning rate decaying linearly from ``learning_rate`` to ``final_learning_rate`` over
``max_iter = T`` iterations, computed here with torch alone. T = 1, 2, 3 follow the first
steps one by one (bias correction makes the first step ``lr * sign(g)``); T = 40 the decay.
Each backend (the ``kit`` fixture; Keras runs the torch model's twin) must follow the same
trajectory, so a faster solver cannot quietly change the reference one."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from conftest import images, make_explainer, mlp_head_cnn  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from sklearn_caf import L2CAFExplainer  # noqa: E402

X = images(2, 6, seed=21)
START = np.random.default_rng(3).uniform(0.2, 1.0, size=(6, 6)).astype(np.float32)
LR, FINAL = 0.5, 1e-3


def torch_adam(net, objective, n_iter, final=FINAL, normalize=True, horizon=None):
    """The reference trajectory: plain torch, torch.optim.Adam and a LambdaLR schedule,
    the learning rate decaying over ``horizon`` iterations (default ``n_iter``)."""
    horizon = n_iter if horizon is None else horizon
    with torch.no_grad():
        x = torch.as_tensor(X)
        a = net.relu2(net.conv2(net.relu1(net.conv1(x))))
        z0 = net(x)
    head = net[4:]
    f = torch.nn.Parameter(torch.as_tensor(np.stack([START] * len(X))))
    opt = torch.optim.Adam([f], lr=LR)  # betas (0.9, 0.999), eps 1e-8: the defaults

    def rate(step):  # multiplier of LR at iteration step + 1 (LambdaLR counts from 0)
        return (LR + (final - LR) * step / max(horizon - 1, 1)) / LR

    sched = torch.optim.lr_scheduler.LambdaLR(opt, rate)
    weights = 1 - 2 * torch.nn.functional.one_hot(z0.argmax(1), z0.shape[1]).float()
    for _ in range(n_iter):
        unit = f / f.flatten(1).norm(dim=1)[:, None, None]
        z = head(a * unit[:, None])
        if objective == "class-oblivious":
            loss = ((z - z0) ** 2).mean(1)
        else:
            loss = (z * weights).sum(1)
        opt.zero_grad()
        loss.sum().backward()  # rows are independent: the sum's gradient is each row's
        opt.step()
        sched.step()
    f = f.detach().numpy()
    if not normalize:
        return f
    return f / np.linalg.norm(f.reshape(len(f), -1), axis=1)[:, None, None]


@pytest.mark.parametrize("objective", ["class-oblivious", "class-specific"])
@pytest.mark.parametrize("n_iter", [1, 2, 3, 40])
def test_adam_follows_torch_optim_adam_with_linear_decay(n_iter, objective, kit):
    net = mlp_head_cnn(seed=7)
    expected = torch_adam(net, objective, n_iter)
    est = make_explainer(
        kit,
        L2CAFExplainer,
        model=net,
        layer="relu2",
        objective=objective,
        solver="adam",
        init=START,
        max_iter=n_iter,
        tol=0,
        learning_rate=LR,
        final_learning_rate=FINAL,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        e = est.fit(X).explain(X)
    assert (e.n_iter == n_iter).all()
    # torch adds eps to sqrt(m2 / (1 - beta2^t)), the core to sqrt(m2) (the step size holds
    # the correction): a difference of eps * 0.03 against gradients of 1e-3 and more.
    np.testing.assert_allclose(e.maps[:, 0], expected, rtol=1e-4, atol=1e-5)


def test_the_reference_is_sensitive_to_bias_correction_and_decay():
    """The test above can fail: the bias-corrected first step moves every cell by about the
    learning rate (without the correction: 0.1 / sqrt(0.001) = 3.2 times that), and the
    trajectory without the decay ends far outside the tolerance."""
    net = mlp_head_cnn(seed=7)
    first = torch_adam(net, "class-oblivious", 1, normalize=False)
    # lr * |g| / (|g| + eps): just under lr where gradients are small (1e-6 here).
    step = np.abs(first - START)
    assert (step <= LR).all() and (step > 0.9 * LR).all()
    ref40 = torch_adam(net, "class-oblivious", 40)
    assert np.abs(torch_adam(net, "class-oblivious", 40, final=LR) - ref40).max() > 1e-2
