"""Feature maps of a network's layer as a scikit-learn transformer.

:class:`FeatureMapExtractor` runs a model's trunk (input to ``layer``) through its backend,
batch by batch, and returns the feature maps as NumPy arrays: the first step of a pipeline
that pools them (:class:`~sklearn_caf.BRNPAPooling`) and classifies the result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._explainers import ModelEstimator
from ._utils import fit_context

__all__ = ["FeatureMapExtractor"]


class FeatureMapExtractor(ModelEstimator):
    """The feature maps of a model's layer, for images given in batches.

    ``fit`` binds the model (picks its backend, splits it at ``layer``); ``transform`` runs
    the trunk, input to ``layer``, on ``batch_size`` images at a time with the model frozen
    and in inference mode, and returns the feature maps in the framework's layout (NCHW for
    PyTorch, NHWC for Keras). The model is never modified.

    Read more in the :ref:`User Guide <brnpa>`.

    Parameters
    ----------
    model : object, default=None
        A PyTorch ``nn.Module`` or a Keras model (frozen; never modified).
    layer : str or None, default=None
        Dotted module path of the layer whose output to return (``"layer4"``,
        ``"features.28"``). ``None`` returns the input itself. ``"auto"`` finds the last
        spatial feature map the output depends on (see :ref:`auto-layer`); ``layer_`` says
        which.
    batch_size : int, default=32
        Images per trunk pass.
    device : str, default="auto"
        Where to run: ``"auto"`` (the model's device, else a GPU when there is one),
        ``"cpu"``, ``"cuda:0"``...
    backend : str, Backend or None, default=None
        Force a backend; ``None`` detects it from the model.
    verbose : int, default=0
        Print progress per batch.

    Attributes
    ----------
    layer_ : str or None
        The layer explained: ``layer``, or the one ``layer="auto"`` found.
    backend_ : Backend
        The backend used.
    bound_ : BoundModel
        The model split at ``layer``.
    input_shape_ : tuple
        Per-image shape of the images seen in :meth:`fit`.
    layer_shape_ : tuple
        Per-image shape of the feature maps for those images.
    channel_axis_ : int
        Axis of the channels in the output (1 for PyTorch, -1 for Keras): pass it on as
        ``BRNPAPooling(channel_axis=...)``.
    split_ : str or None
        How the backend split the model at ``layer``: PyTorch ``"fx"``, ``"export"`` or
        ``"hooks"`` (see the Backends page), Keras ``"graph"`` or ``"intercept"``;
        ``"input"`` for ``layer=None``.

    See Also
    --------
    BRNPAPooling : Pools the feature maps into ranked part vectors.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from sklearn_caf import FeatureMapExtractor
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
    >>> images = np.zeros((5, 3, 8, 8), dtype=np.float32)
    >>> FeatureMapExtractor(model=net, layer="1", batch_size=2).fit_transform(images).shape
    (5, 4, 8, 8)
    """

    def __init__(
        self,
        *,
        model: Any = None,
        layer: str | None = None,
        batch_size: int = 32,
        device: Any = "auto",
        backend: Any = None,
        verbose: int = 0,
    ):
        self.model = model
        self.layer = layer
        self.batch_size = batch_size
        self.device = device
        self.backend = backend
        self.verbose = verbose

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> FeatureMapExtractor:
        """Bind the model at ``layer`` and check it on the first image.

        Parameters
        ----------
        X : array-like or tensor of shape (n_images, ...)
            Images in the model's own layout.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted transformer.
        """
        X = self._bind(X)
        with self.bound_ as bound:
            a, _ = self._first_pass(bound, X)
        self.layer_shape_ = tuple(int(s) for s in a.shape[1:])
        self.channel_axis_ = self.bound_.channel_axis
        return self

    def transform(self, X: Any) -> np.ndarray:
        """The feature maps of ``X`` at ``layer``.

        Parameters
        ----------
        X : array-like or tensor of shape (n_images, ...)
            Images in the model's own layout, as in :meth:`fit`.

        Returns
        -------
        features : ndarray of shape (n_images, \\*layer_shape\\_), float32
            In the framework's layout (channels on ``channel_axis_``).
        """
        X = self._check_fitted_images(X)
        bound = self.bound_
        parts = []
        with bound:
            for start in range(0, X.shape[0], self.batch_size):
                stop = min(start + self.batch_size, X.shape[0])
                a, _ = bound.trunk(bound.asarray(X[start:stop]))
                parts.append(bound.to_numpy(a).astype(np.float32, copy=False))
                if self.verbose:
                    print(f"[FeatureMapExtractor] {stop}/{X.shape[0]} images")
        return np.concatenate(parts)
