"""What a known model expects: its input preprocessing, its input size, its layer to explain.

Read from the model's own configuration, never downloaded and without importing a
framework: a torchvision weights enum (``weights.transforms()``), a timm model's
``pretrained_cfg``, a keras.applications model's family (each family has its own
``preprocess_input``), the bundled EfficientNet-Lite0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._image_box import IMAGENET_MEAN, IMAGENET_STD, NormalizeImage

# keras.applications' ``preprocess_input`` modes, by the model's name (its prefix).
_CAFFE = NormalizeImage(
    mean=(103.939 / 255, 116.779 / 255, 123.68 / 255),
    std=(1 / 255,) * 3,
    channels_last=True,
    bgr=True,
)
_TF = NormalizeImage(mean=(0.5,) * 3, std=(0.5,) * 3, channels_last=True)
_TORCH = NormalizeImage(mean=IMAGENET_MEAN, std=IMAGENET_STD, channels_last=True)
_RAW = NormalizeImage(std=(1 / 255,) * 3, channels_last=True)  # 0-255: the model rescales
_KERAS_FAMILIES = (
    # (name prefix, preprocessing, what keras.applications does)
    ("resnet50v2", _TF, "tf"),
    ("resnet101v2", _TF, "tf"),
    ("resnet152v2", _TF, "tf"),
    ("resnet", _CAFFE, "caffe"),
    ("vgg", _CAFFE, "caffe"),
    ("mobilenetv3", _RAW, "inside the model"),
    ("mobilenet", _TF, "tf"),
    ("inception", _TF, "tf"),
    ("xception", _TF, "tf"),
    ("nasnet", _TF, "tf"),
    ("densenet", _TORCH, "torch"),
    ("efficientnet", _RAW, "inside the model"),
    ("convnext", _RAW, "inside the model"),
    ("regnet", _RAW, "inside the model"),
)
# Last spatial feature map of torchvision architectures (what layer="auto" finds).
_TORCHVISION_LAYERS = {
    "resnet": "layer4",
    "resnext": "layer4",
    "wide_resnet": "layer4",
    "densenet": "features",
    "mobilenet": "features",
    "efficientnet": "features",
    "convnext": "features",
    "regnet": "trunk_output",
    "googlenet": "inception5b",
    "inception": "Mixed_7c",
    "swin": "permute",
    "vit": "auto",  # the last block's ln_1 (depends on the depth)
}


@dataclass(frozen=True)
class ModelPreset:
    """A model's input preprocessing, input size and layer to explain.

    Attributes
    ----------
    preprocess : NormalizeImage
        One resized ``(height, width, 3)`` uint8 RGB image to the model's input: pass it as
        the ``preprocess`` of :class:`ImageBoxDataset`'s constructors.
    image_size : tuple of int
        ``(height, width)`` the model takes (its crop size).
    layer : str
        The layer to explain: a name, or ``"auto"`` where it depends on the model
        (:ref:`auto-layer`).
    source : str
        Where the numbers come from.
    """

    preprocess: NormalizeImage
    image_size: tuple[int, int]
    layer: str
    source: str


def _torchvision_layer(name: str) -> str:
    name = name.lower()
    for prefix, layer in _TORCHVISION_LAYERS.items():
        if name.startswith(prefix):
            return layer
    return "auto"


def _from_weights(weights: Any) -> ModelPreset:
    transforms = weights.transforms()
    crop = getattr(transforms, "crop_size", [224])
    size = (int(crop[0]), int(crop[-1]))
    arch = type(weights).__name__.removesuffix("_Weights")
    return ModelPreset(
        preprocess=NormalizeImage(mean=tuple(transforms.mean), std=tuple(transforms.std)),
        image_size=size,
        layer=_torchvision_layer(arch),
        source=f"torchvision {type(weights).__name__}.{weights.name}.transforms() (its "
        f"resize to {list(getattr(transforms, 'resize_size', []))} and center crop are a "
        "direct resize here)",
    )


def model_preset(model: Any = None, *, weights: Any = None) -> ModelPreset:
    """The preprocessing, input size and layer of a known model, from its configuration.

    Nothing is downloaded and no framework is imported: the answer is read off the object
    given. Known: torchvision weights enums (``weights=ResNet50_Weights.IMAGENET1K_V2``, or
    a torchvision model instance, whose architectures all take ImageNet's mean and std), timm
    models (``model.pretrained_cfg``), keras.applications models (by family, as their
    ``preprocess_input``), the bundled EfficientNet-Lite0. The preprocessing feeds
    :class:`ImageBoxDataset`, so that the API and ``sklearn-caf evaluate`` see the same
    pixels.

    Parameters
    ----------
    model : object, default=None
        A timm, torchvision, keras.applications or the bundled EfficientNet-Lite0 model.
    weights : torchvision weights enum member, default=None
        The weights a torchvision model was (or will be) loaded with; preferred over
        ``model`` where both are given, as it holds the exact transforms.

    Returns
    -------
    preset : ModelPreset
        ``preprocess``, ``image_size``, ``layer`` and ``source``.

    Raises
    ------
    ValueError
        For a model whose preprocessing cannot be read off it.

    Examples
    --------
    >>> import torch
    >>> from sklearn_caf.datasets import model_preset
    >>> from sklearn_caf_torch.pretrained import efficientnet_lite0
    >>> preset = model_preset(efficientnet_lite0())
    >>> preset.preprocess, preset.image_size, preset.layer
    (NormalizeImage(mean=(0.4980392156862745, 0.4980392156862745, 0.4980392156862745), \
std=(0.5019607843137255, 0.5019607843137255, 0.5019607843137255)), (224, 224), '_head_relu6')
    """
    if weights is not None:
        if not (callable(getattr(weights, "transforms", None)) and hasattr(weights, "meta")):
            raise ValueError(
                "weights must be a torchvision weights enum member "
                f"(ResNet50_Weights.IMAGENET1K_V2, say); got {weights!r}."
            )
        return _from_weights(weights)
    if model is None:
        raise ValueError("model_preset needs a model or weights=; got neither.")
    cls = type(model)
    module = cls.__module__
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and "mean" in cfg:
        size = tuple(int(s) for s in cfg.get("input_size", (3, 224, 224))[-2:])
        return ModelPreset(
            NormalizeImage(mean=tuple(cfg["mean"]), std=tuple(cfg["std"])),
            size,
            "auto",
            f"timm pretrained_cfg of {cfg.get('architecture', cls.__name__)}",
        )
    if module.startswith(("efficientnet_lite_pytorch", "sklearn_caf_torch.pretrained")):
        return ModelPreset(
            NormalizeImage(mean=(127 / 255,) * 3, std=(128 / 255,) * 3),
            (224, 224),
            "_head_relu6",
            "EfficientNet-Lite0's (pixel - 127) / 128",
        )
    if module.startswith("torchvision.models"):
        name = module.rsplit(".", 1)[-1]
        return ModelPreset(
            NormalizeImage(mean="imagenet", std="imagenet"),
            (299, 299) if name == "inception" else (224, 224),
            _torchvision_layer(name),
            "torchvision: every classification model takes ImageNet's mean and std; pass "
            "weights= for the exact sizes",
        )
    if module.startswith("keras"):
        name = str(getattr(model, "name", "")).lower()
        for prefix, preprocess, mode in _KERAS_FAMILIES:
            if name.startswith(prefix):
                shape = getattr(model, "input_shape", None) or (None, 224, 224, 3)
                size = tuple(int(s) if s else 224 for s in shape[1:3])
                return ModelPreset(
                    preprocess,
                    size,
                    "auto",
                    f"keras.applications {name}: preprocess_input mode {mode!r}",
                )
    raise ValueError(
        f"model_preset cannot read the preprocessing of a {module}.{cls.__name__}: it knows "
        "torchvision weights (weights=), timm models, keras.applications models and the "
        "bundled EfficientNet-Lite0. Build a NormalizeImage from the model's documentation."
    )
