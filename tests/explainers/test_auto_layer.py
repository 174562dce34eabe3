"""``layer="auto"``: the last spatial feature map the output depends on.

On torchvision and keras.applications architectures (random weights) it picks the layer
the user guide's table names; the model is left as it was; where no layer qualifies, the
error says what was seen and what to pass.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from conftest import import_tensorflow, import_torchvision, tiny_vit  # noqa: E402
from torch import nn  # noqa: E402

from sklearn_caf import FeatureMapExtractor, GradCAMExplainer, L2CAFExplainer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.EfficiencyWarning")


def torchvision_model(name):
    torchvision = import_torchvision()
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    return getattr(torchvision.models, name)(**kwargs).eval()


@pytest.mark.parametrize(
    ("name", "expected", "shape"),
    [
        ("resnet18", "layer4", (512, 7, 7)),
        ("mobilenet_v3_small", "features", (576, 7, 7)),
        ("efficientnet_b0", "features", (1280, 7, 7)),
        ("densenet121", "features", (1024, 7, 7)),
        ("convnext_tiny", "features", (768, 7, 7)),
        ("squeezenet1_0", "classifier.2", (1000, 13, 13)),
        ("googlenet", "inception5b", (1024, 7, 7)),
        ("swin_t", "permute", (768, 7, 7)),
    ],
)
def test_torchvision_architectures(name, expected, shape):
    model = torchvision_model(name)
    images = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    explainer = GradCAMExplainer(model=model, layer="auto").fit(images)
    assert explainer.layer_ == expected and explainer.layer_shape_ == shape
    assert explainer.layer == "auto"  # the parameter as given


def test_a_vision_transformer_gets_its_last_blocks_ln_1():
    # Every later token output reaches the class token only through itself: no gradient on
    # the patches there, so the rule walks back to the attention's input.
    vit = tiny_vit()
    images = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    explainer = L2CAFExplainer(model=vit, layer="auto").fit(images)
    assert explainer.layer_ == "encoder.layers.encoder_layer_1.ln_1"
    assert (explainer.layout_, explainer.grid_) == ("tokens", (4, 4))
    assert explainer.transform(images).shape == (2, 32, 32)


class Net(nn.Module):
    """Two convolutions, a pooled head; the second convolution's map is the answer."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.pool(self.act(self.conv2(torch.relu(self.conv1(x))))).flatten(1))


def test_the_model_is_left_as_it_was_and_the_layer_is_the_last_map():
    net = Net().train()
    flags = [p.requires_grad for p in net.parameters()]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    hooks = sum(len(m._forward_hooks) for m in net.modules())
    images = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    explainer = GradCAMExplainer(model=net, layer="auto").fit(images)
    assert explainer.layer_ == "act"  # after conv2, before the pooling
    assert net.training and [p.requires_grad for p in net.parameters()] == flags
    assert sum(len(m._forward_hooks) for m in net.modules()) == hooks
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    extractor = FeatureMapExtractor(model=net, layer="auto").fit(images)
    assert extractor.layer_ == "act" and extractor.transform(images).shape == (2, 6, 4, 4)


def test_no_spatial_map_is_an_error_naming_what_was_seen():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).eval()
    images = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"layer='auto' found no layer.*Pass layer="):
        GradCAMExplainer(model=mlp, layer="auto").fit(images)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ResNet50", "conv5_block3_out"),
        ("MobileNetV2", "out_relu"),
        ("EfficientNetB0", "top_activation"),
        ("DenseNet121", "relu"),
        ("ConvNeXtTiny", "convnext_tiny_stage_3_block_2_identity"),
        ("VGG16", "block5_pool"),
    ],
)
def test_keras_applications(name, expected):
    _, keras = import_tensorflow()
    keras.utils.set_random_seed(0)
    # The default softmax sums to 1 whatever the map: the rule reads the squared norm.
    model = getattr(keras.applications, name)(weights=None, input_shape=(64, 64, 3))
    images = np.random.default_rng(3).standard_normal((1, 64, 64, 3)).astype(np.float32)
    explainer = GradCAMExplainer(model=model, layer="auto").fit(images)
    assert explainer.layer_ == expected and explainer.layout_ == "channels_last"
