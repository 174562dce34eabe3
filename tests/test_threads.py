"""Explainers sharing one model across threads (a web service's thread pool, say).

The model has dropout and batch norm and is left in train mode by its user, so any call that
computes with another call's flags (dropout on, batch statistics) gives a different map, and
any call that restores what it saw on entry (another call's frozen flags) leaves the model
changed. Concurrent calls must give exactly the maps of the same calls made one by one, and
leave the model bit-identical: weights and buffers (batch norm's running statistics are
never updated), train/eval flags, ``requires_grad``, hooks (torch); weights, ``trainable``
flags and layer attributes (Keras).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import pytest

from sklearn_caf import GradCAMExplainer, L2CAFExplainer

# tol=0 below: Adam runs every iteration and says so, as it should.
pytestmark = pytest.mark.filterwarnings(
    "ignore:L2-CAF did not converge:sklearn.exceptions.ConvergenceWarning"
)

N_THREADS = 3
ROUNDS = 2


def _explainers(model, layer):
    # Adam with tol=0 runs all its iterations, so the L2-CAF calls stay inside the model
    # long enough to overlap with the quick Grad-CAM calls of the other threads.
    adam = dict(solver="adam", max_iter=60, tol=0.0)
    return [
        L2CAFExplainer(model=model, layer=layer, objective="class-oblivious", **adam),
        L2CAFExplainer(model=model, layer=layer, objective="class-specific", top_k=2, **adam),
        GradCAMExplainer(model=model, layer=layer, top_k=2),
    ]


def _run_concurrently(explainers, X):
    """Every thread runs every explainer (in a different order) ROUNDS times; the maps."""
    barrier = threading.Barrier(N_THREADS)
    results: dict = {}
    errors: list = []

    def work(t):
        try:
            order = np.roll(np.arange(len(explainers)), t)
            barrier.wait()
            for r in range(ROUNDS):
                for e in order:
                    results[t, r, e] = explainers[e].explain(X).maps
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(t,)) for t in range(N_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def _check_same_maps(explainers, X):
    for ex in explainers:
        ex.fit(X)
    sequential = [ex.explain(X).maps for ex in explainers]
    concurrent = _run_concurrently(explainers, X)
    assert len(concurrent) == N_THREADS * ROUNDS * len(explainers)
    for (t, r, e), maps in concurrent.items():
        np.testing.assert_array_equal(
            maps, sequential[e], err_msg=f"thread {t}, round {r}, explainer {e}"
        )


# -- PyTorch -------------------------------------------------------------------------------------


def _torch_net():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 4, 3, padding=1),
            bn1=nn.BatchNorm2d(4),
            relu1=nn.ReLU(),
            drop1=nn.Dropout2d(0.5),
            conv2=nn.Conv2d(4, 6, 3, padding=1),
            bn2=nn.BatchNorm2d(6),
            relu2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            drop2=nn.Dropout(0.5),
            fc=nn.Linear(6, 5),
        )
    )
    with torch.no_grad():  # running statistics unlike a batch's, so train mode shows
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    net.train()  # as the user left it
    net.conv1.weight.requires_grad_(False)  # a user's partly frozen model
    net.fc.register_forward_hook(lambda *args: None)
    return net


def _torch_snapshot(net):
    import torch

    return {
        "tensors": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "training": [m.training for m in net.modules()],
        "requires_grad": [p.requires_grad for p in net.parameters()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in net.modules()
        ],
        "grad_mode": torch.is_grad_enabled(),
    }


def _assert_torch_unchanged(net, before):
    after = _torch_snapshot(net)
    assert after["tensors"].keys() == before["tensors"].keys()
    for key, value in before["tensors"].items():
        assert after["tensors"][key].equal(value), f"{key} changed"
    for name in ("training", "requires_grad", "hooks", "grad_mode"):
        assert after[name] == before[name], f"{name} changed"


def test_torch_threads_share_one_model():
    net = _torch_net()
    X = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    before = _torch_snapshot(net)
    explainers = _explainers(net, "relu2")
    _check_same_maps(explainers, X)
    _assert_torch_unchanged(net, before)
    from sklearn_caf_torch._state import held_count

    assert held_count(net) == 0


def test_torch_threads_each_with_own_explainer():
    """Fresh explainers per thread (fit and explain concurrently), two layers."""
    net = _torch_net()
    X = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    before = _torch_snapshot(net)
    expected = {
        layer: [ex.fit(X).explain(X).maps for ex in _explainers(net, layer)]
        for layer in ("relu1", "relu2")
    }
    barrier = threading.Barrier(N_THREADS)
    got, errors = {}, []

    def work(t):
        layer = ("relu1", "relu2")[t % 2]
        try:
            barrier.wait()
            got[t] = [ex.fit(X).explain(X).maps for ex in _explainers(net, layer)]
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(t,)) for t in range(N_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    for t, maps in got.items():
        for m, e in zip(maps, expected[("relu1", "relu2")[t % 2]], strict=True):
            np.testing.assert_array_equal(m, e)
    _assert_torch_unchanged(net, before)


def test_torch_guard_counts_per_module():
    """Overlapping calls on a model and on a submodule of it, left in any order: nothing
    is unfrozen before the last call leaves, and then the user's flags come back."""
    torch = pytest.importorskip("torch")
    from sklearn_caf_torch._state import ModelGuard, held_count

    net = _torch_net()
    sub = net.bn2
    outer, inner = ModelGuard(), ModelGuard()
    before = _torch_snapshot(net)

    def frozen():
        return not any(m.training for m in net.modules()) and not any(
            p.requires_grad for p in net.parameters()
        )

    outer.enter(net)
    inner.enter(sub)
    outer.exit(None, None, None)  # the outer call leaves first
    assert not sub.training and not any(p.requires_grad for p in sub.parameters())
    assert net.training and net.conv2.weight.requires_grad  # its own modules are released
    inner.exit(None, None, None)
    _assert_torch_unchanged(net, before)
    inner.enter(sub)
    outer.enter(net)
    outer.enter(net)  # re-entrant in one thread
    inner.exit(None, None, None)
    assert frozen()
    outer.exit(None, None, None)
    assert frozen()
    outer.exit(None, None, None)
    _assert_torch_unchanged(net, before)
    assert held_count(net) == 0
    with torch.inference_mode():
        outer.enter(net)
        assert not torch.is_inference_mode_enabled()
        outer.exit(None, None, None)
        assert torch.is_inference_mode_enabled()


# -- Keras ---------------------------------------------------------------------------------------


def _keras():
    from conftest import import_tensorflow

    pytest.importorskip("sklearn_caf_tensorflow")
    return import_tensorflow()[1]


def _keras_functional(keras):
    L = keras.layers
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, padding="same", name="conv1")(x)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.ReLU(name="relu1")(h)
    h = L.Dropout(0.5, name="drop1")(h)
    h = L.Conv2D(6, 3, padding="same", name="conv2")(h)
    h = L.BatchNormalization(name="bn2")(h)
    h = L.ReLU(name="relu2")(h)
    h = L.GlobalAveragePooling2D(name="pool")(h)
    h = L.Dropout(0.5, name="drop2")(h)
    model = keras.Model(x, L.Dense(5, name="fc")(h))
    _randomize_bn(model)
    model.get_layer("conv1").trainable = False  # a user's partly frozen model
    return model


def _keras_subclassed(keras):
    L = keras.layers

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.c1 = L.Conv2D(4, 3, padding="same", name="c1")
            self.bn = L.BatchNormalization(name="bn")
            self.drop1 = L.Dropout(0.5, name="drop1")
            self.c2 = L.Conv2D(6, 3, padding="same", name="c2")
            self.pool = L.GlobalAveragePooling2D(name="pool")
            self.drop2 = L.Dropout(0.5, name="drop2")
            self.fc = L.Dense(5, name="fc")

        def call(self, x, training=False):
            h = keras.ops.relu(self.bn(self.c1(x), training=training))
            h = self.drop1(h, training=training)
            h = self.pool(keras.ops.relu(self.c2(h)))
            return self.fc(self.drop2(h, training=training))

    keras.utils.set_random_seed(0)
    model = Net()
    model(np.zeros((1, 8, 8, 3), np.float32))
    _randomize_bn(model)
    return model


def _randomize_bn(model):
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if "bn" in layer.name:
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [gamma, beta, rng.uniform(-1, 1, mean.shape), rng.uniform(0.5, 2, var.shape)]
            )


def _keras_snapshot(model):
    return {
        "weights": [np.array(w.numpy(), copy=True) for w in model.weights],
        "trainable": [layer.trainable for layer in model.layers],
        "attributes": [sorted(vars(layer)) for layer in model.layers],
    }


def _assert_keras_unchanged(model, before):
    after = _keras_snapshot(model)
    assert len(after["weights"]) == len(before["weights"])
    for w, b in zip(after["weights"], before["weights"], strict=True):
        np.testing.assert_array_equal(w, b)
    assert after["trainable"] == before["trainable"]
    assert after["attributes"] == before["attributes"]


@pytest.mark.parametrize(
    ("build", "layer"), [(_keras_functional, "relu2"), (_keras_subclassed, "c2")]
)
def test_keras_threads_share_one_model(build, layer):
    keras = _keras()
    model = build(keras)
    X = np.random.default_rng(0).standard_normal((3, 8, 8, 3)).astype(np.float32)
    before = _keras_snapshot(model)
    explainers = _explainers(model, layer)
    _check_same_maps(explainers, X)
    _assert_keras_unchanged(model, before)


def test_keras_interception_is_per_thread():
    """While one thread has a layer's call intercepted, another thread calling the model
    runs the layer's own call, and the last one out leaves the layer as it was."""
    keras = _keras()
    from sklearn_caf_tensorflow._split import _Patched

    model = _keras_subclassed(keras)
    X = np.ones((1, 8, 8, 3), np.float32)
    expected = np.asarray(model(X))
    inside, release = threading.Event(), threading.Event()
    seen = {}

    def intercepted():
        with _Patched(model.c2, lambda *a, **k: keras.ops.zeros((1, 8, 8, 6))):
            seen["patched"] = np.asarray(model(X))
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=intercepted)
    thread.start()
    assert inside.wait(10)
    try:
        seen["other"] = np.asarray(model(X))
        with _Patched(model.c2, lambda *a, **k: keras.ops.ones((1, 8, 8, 6))):
            seen["nested"] = np.asarray(model(X))
    finally:
        release.set()
        thread.join()
    np.testing.assert_array_equal(seen["other"], expected)
    assert not np.array_equal(seen["patched"], expected)
    assert not np.array_equal(seen["nested"], seen["patched"])
    assert "call" not in vars(model.c2)


def test_torch_heads_see_their_own_threads_input_shape():
    """A head that reads the input's size (here: upsampling back to it) gets the size of
    its own thread's images, even when another thread binds images of another size in
    between: the stand-in input is kept per thread."""
    torch = pytest.importorskip("torch")
    from torch import nn
    from torch.nn import functional as F

    from sklearn_caf_torch._bound import TorchBoundModel

    class UpsampleToInput(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            a = self.conv(x)
            up = F.interpolate(a, size=x.shape[-2:], mode="nearest")
            # The upsampled map's border rows weigh the output: a wrong size changes it.
            return self.fc(up[:, :, -1, :].mean(2) * up.shape[-1])

    torch.manual_seed(0)
    model = UpsampleToInput().eval()
    bound = TorchBoundModel(model, layer="conv", output=None, device="cpu")
    small, large = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 12, 12)
    b_bound, a_may_go = threading.Event(), threading.Event()
    got, errors = {}, []

    def first():
        try:
            with bound:
                a, context = bound.trunk(small)
                a_may_go.set()
                b_bound.wait(10)
                got["small"] = bound.head(a, context)
        except Exception as exc:  # reported below
            errors.append(exc)

    def second():
        try:
            a_may_go.wait(10)
            with bound:
                bound.trunk(large)
            b_bound.set()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    with torch.no_grad():
        expected = model(small)
    torch.testing.assert_close(got["small"], expected)
