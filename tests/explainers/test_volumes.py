"""3-D volumes (medical images, video clips): the filter is N-D, nothing else changes."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn_caf import GradCAMExplainer, L2CAFExplainer  # noqa: E402


def _volume_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv3d(4, 6, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool3d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 3),
    ).eval()


def _volumes(n=2, seed=0):
    return np.random.default_rng(seed).random((n, 1, 6, 8, 10), dtype=np.float32)


@pytest.mark.parametrize("objective", ["class-oblivious", "class-specific"])
def test_l2caf_on_volumes_exact_equals_adam(objective):
    net, X = _volume_net(), _volumes()
    exact = L2CAFExplainer(model=net, layer="3", objective=objective).fit(X)
    adam = L2CAFExplainer(
        model=net, layer="3", objective=objective, solver="adam", max_iter=2000, tol=1e-9
    ).fit(X)
    assert exact.solver_ == "exact"
    assert exact.filter_shape_ == (3, 4, 5)
    e, a = exact.explain(X), adam.explain(X)
    assert e.heatmaps.shape == (2, 1, 6, 8, 10)
    assert e.maps.shape == (2, 1, 3, 4, 5)
    norms = np.sqrt((e.maps.astype(np.float64) ** 2).sum(axis=(2, 3, 4)))
    np.testing.assert_allclose(norms, 1, rtol=1e-5)
    u, v = e.maps.reshape(2, -1), a.maps.reshape(2, -1)
    cosine = (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
    assert np.all(cosine > 0.999), cosine


def test_gradcam_on_volumes_matches_captum():
    captum_attr = pytest.importorskip("captum.attr")
    net, X = _volume_net(seed=1), _volumes(seed=1)
    ours = GradCAMExplainer(model=net, layer="3", top_k=2).fit(X).explain(X)
    for rank in range(2):
        target = torch.as_tensor(ours.targets[:, rank])
        theirs = captum_attr.LayerGradCam(net, net[3]).attribute(
            torch.as_tensor(X), target=target, relu_attributions=True
        )
        np.testing.assert_allclose(
            ours.maps[:, rank], theirs[:, 0].detach().numpy(), rtol=1e-5, atol=1e-7
        )
