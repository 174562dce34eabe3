"""``model_preset``: a known model's preprocessing, input size and layer, from its own
configuration. Each preprocessing is checked against the framework's own implementation
(torchvision's transforms' numbers, keras.applications' ``preprocess_input``, the bundled
model's ``preprocess_efficientnet_lite``) on a real image."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import import_tensorflow, import_torchvision

from sklearn_caf.datasets import NormalizeImage, model_preset

IMAGE = np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8)


def test_torchvision_weights_give_their_transforms_numbers():
    torchvision = import_torchvision()
    import torch

    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    preset = model_preset(weights=weights)
    transforms = weights.transforms()
    assert preset.image_size == (224, 224) and preset.layer == "layer4"
    # The same normalization as torchvision's transform on the already-resized image.
    tensor = torch.from_numpy(IMAGE).permute(2, 0, 1).float() / 255
    mean = torch.tensor(transforms.mean)[:, None, None]
    std = torch.tensor(transforms.std)[:, None, None]
    np.testing.assert_allclose(
        preset.preprocess(IMAGE), ((tensor - mean) / std).numpy(), rtol=1e-6, atol=1e-6
    )
    vit = model_preset(weights=torchvision.models.ViT_B_16_Weights.IMAGENET1K_V1)
    assert vit.layer == "auto" and vit.image_size == (224, 224)


def test_torchvision_models_take_imagenet_statistics():
    torchvision = import_torchvision()
    assert model_preset(torchvision.models.resnet18()).layer == "layer4"
    swin = model_preset(torchvision.models.swin_t())
    assert swin.layer == "permute" and swin.preprocess == NormalizeImage("imagenet", "imagenet")


def test_the_bundled_efficientnet_matches_its_own_preprocessing():
    pytest.importorskip("efficientnet_lite_pytorch")
    from sklearn_caf_torch.pretrained import efficientnet_lite0, preprocess_efficientnet_lite

    preset = model_preset(efficientnet_lite0())
    image = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    expected = preprocess_efficientnet_lite(image[None])[0]  # a batch, resized to 224
    np.testing.assert_allclose(preset.preprocess(image), np.asarray(expected), atol=1e-6)
    assert preset.layer == "_head_relu6"


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("ResNet50", "resnet"),  # caffe: BGR, ImageNet means in 0-255
        ("VGG16", "vgg16"),
        ("MobileNetV2", "mobilenet_v2"),  # tf: [-1, 1]
        ("DenseNet121", "densenet"),  # torch: ImageNet mean and std
        ("EfficientNetB0", "efficientnet"),  # inside the model: 0-255 as is
        ("ConvNeXtTiny", "convnext"),
    ],
)
def test_keras_applications_match_their_preprocess_input(name, module):
    _, keras = import_tensorflow()
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3))
    preset = model_preset(model)
    expected = getattr(keras.applications, module).preprocess_input(
        IMAGE[None].astype(np.float32)
    )[0]
    np.testing.assert_allclose(preset.preprocess(IMAGE), np.asarray(expected), atol=1e-4)
    assert preset.image_size == (32, 32) and preset.preprocess.channels_last


def test_timm_configurations_and_unknown_models():
    preset = model_preset(_TimmLike())
    assert preset.image_size == (288, 288) and preset.layer == "auto"
    assert preset.preprocess == NormalizeImage(mean="imagenet", std="imagenet")
    with pytest.raises(ValueError, match="cannot read the preprocessing of a"):
        model_preset(object())
    with pytest.raises(ValueError, match="weights must be a torchvision weights enum"):
        model_preset(weights="ResNet50")
    with pytest.raises(ValueError, match="needs a model or weights"):
        model_preset()


class _TimmLike:
    """timm models describe themselves in ``pretrained_cfg`` (timm is not installed here;
    its configuration is a plain dict, read as such)."""

    pretrained_cfg = {
        "architecture": "resnet50d",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "input_size": (3, 288, 288),
    }
