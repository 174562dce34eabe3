"""Feature maps of a network's layer as a scikit-learn transformer.

:class:`FeatureMapExtractor` runs a model's trunk (input to ``layer``) through its backend,
batch by batch, and returns the feature maps as NumPy arrays: the first step of a pipeline
that pools them (:class:`~sklearn_caf.BRNPAPooling`) and classifies the result.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from ._base import BaseExplainer
from ._validation import check_images
from .backend import get_backend

__all__ = ["FeatureMapExtractor"]


class FeatureMapExtractor(TransformerMixin, BaseEstimator):
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
        ``"features.28"``). ``None`` returns the input itself.
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

    _parameter_constraints: dict = {
        "model": "no_validation",
        "layer": [str, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": "no_validation",
        "backend": "no_validation",
        "verbose": ["verbose"],
    }

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

    # Extracting never changes the weights: clones (one per grid-search fold) share the model.
    __sklearn_clone__ = BaseExplainer.__sklearn_clone__

    @_fit_context(prefer_skip_nested_validation=True)
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
        if self.model is None:
            raise ValueError("model must be given: a PyTorch or Keras model; got model=None.")
        self.backend_ = get_backend(self.model, self.backend)
        self.bound_ = self.backend_.bind(
            self.model, layer=self.layer, output=None, device=self.device
        )
        X = check_images(X, self.bound_)
        with self.bound_ as bound:
            a, _ = bound.trunk(bound.asarray(X[:1]))
        self.input_shape_ = X.shape[1:]
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
        check_is_fitted(self)
        bound = self.bound_
        X = check_images(X, bound)
        if X.ndim != len(self.input_shape_) + 1:
            raise ValueError(
                f"X must have the layout seen in fit, per-image shape like {self.input_shape_}; "
                f"got {X.shape[1:]}."
            )
        parts = []
        with bound:
            for start in range(0, X.shape[0], self.batch_size):
                stop = min(start + self.batch_size, X.shape[0])
                a, _ = bound.trunk(bound.asarray(X[start:stop]))
                parts.append(bound.to_numpy(a).astype(np.float32, copy=False))
                if self.verbose:
                    print(f"[FeatureMapExtractor] {stop}/{X.shape[0]} images")
        return np.concatenate(parts)

    def set_output(self, *, transform: str | None = None) -> FeatureMapExtractor:
        """Accept ``Pipeline.set_output``; feature maps stay NumPy arrays.

        Parameters
        ----------
        transform : {"default", "pandas", "polars"}, default=None
            Ignored: (n, C, h, w) feature maps fit no DataFrame.

        Returns
        -------
        self : object
        """
        return self

    def _more_tags(self):  # scikit-learn < 1.6
        return {"requires_y": False, "stateless": False}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.target_tags.required = False
        tags.non_deterministic = False
        return tags
