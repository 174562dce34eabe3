"""What every estimator that runs a user's model shares: binding it, cloning, input checks."""

from __future__ import annotations

import copy
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted

from .._utils import Interval
from ..backend import get_backend
from ._auto_layer import find_layer
from ._layouts import apply_layout
from ._validation import check_images


class ModelEstimator(TransformerMixin, BaseEstimator):
    """Base of the transformers that run a model split at a layer (explainers, extractors).

    It holds the parameters they all take (``model``, ``layer``, ``batch_size``,
    ``device``, ``backend``, ``verbose``), binds the model in :meth:`_bind`, checks images
    against what :meth:`fit` saw, and clones without copying the model.
    """

    _parameter_constraints: dict = {
        "model": "no_validation",
        "layer": [str, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": "no_validation",
        "backend": "no_validation",
        "verbose": ["verbose"],
    }

    def __sklearn_clone__(self):
        # These estimators never change the model's weights, so every clone (one per
        # grid-search fold, say) shares it instead of deep-copying a large network.
        params = self.get_params(deep=False)
        new = type(self)(
            **{k: v if k == "model" else clone(v, safe=False) for k, v in params.items()}
        )
        for attr in ("_metadata_request", "_sklearn_output_config"):
            if hasattr(self, attr):
                setattr(new, attr, copy.deepcopy(getattr(self, attr)))
        return new

    # A bound model holds traced graphs and compiled functions that do not pickle; they are
    # rebuilt from the model (which does) when a fitted estimator is unpickled.
    _UNPICKLED = ("bound_", "_solver_cache", "_cam_cache")

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        return {k: v for k, v in state.items() if k not in self._UNPICKLED}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "backend_" in state:
            self.bound_ = self.backend_.bind(
                self.model,
                layer=getattr(self, "layer_", self.layer),
                output=getattr(self, "output", None),
                device=self.device,
            )
            layout = getattr(self, "_feature_layout", None)
            if layout is not None:
                self.bound_ = apply_layout(self.bound_, layout)

    def _bind(self, X: Any, *, output: Any = None) -> np.ndarray:
        """Pick the backend, split the model at ``layer``; return ``X`` checked."""
        if self.model is None:
            raise ValueError("model must be given: a PyTorch or Keras model; got model=None.")
        self.backend_ = get_backend(self.model, self.backend)
        self.layer_ = self.layer
        if self.layer == "auto":
            self.layer_ = self._find_layer(X, output)
            if self.verbose:
                print(f"[{type(self).__name__}] layer='auto' chose layer={self.layer_!r}")
        self.bound_ = self.backend_.bind(
            self.model, layer=self.layer_, output=output, device=self.device
        )
        X = check_images(X, self.bound_)
        self.input_shape_ = X.shape[1:]
        return X

    def _find_layer(self, X: np.ndarray, output: Any) -> str:
        """``layer="auto"``'s layer: the last spatial feature map the output depends on."""
        probe = self.backend_.bind(self.model, layer=None, output=output, device=self.device)
        X = check_images(X, probe)
        channel = probe.input_channel_axis % X.ndim
        sizes = tuple(X.shape[ax] for ax in range(1, X.ndim) if ax != channel)
        return find_layer(
            self.backend_,
            self.model,
            X[:1],
            input_sizes=sizes,
            native_channel_axis=probe.channel_axis,
            output=output,
            device=self.device,
        )

    def _first_pass(self, bound: Any, X: np.ndarray) -> tuple[Any, tuple]:
        """The trunk on ``X[:1]``; a model that cannot take ``X`` is the caller's input error."""
        try:
            result = bound.trunk(bound.asarray(X[:1]))
        except Exception as exc:
            raise ValueError(
                f"X (per-image shape {X.shape[1:]}) cannot be run through the model up to "
                f"layer={self.layer_!r}; check its layout and channel count. The model said: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        # How the backend split the model (torch: "fx", "export", "hooks"), once it has seen
        # an input; backends that split one way only may not say.
        self.split_ = getattr(bound, "split_method", None)
        return result

    def _check_fitted_images(self, X: Any) -> np.ndarray:
        """``X`` checked, with the rank and channel count seen in fit."""
        check_is_fitted(self)
        X = check_images(X, self.bound_)
        channel = self.bound_.input_channel_axis % X.ndim
        if (
            X.ndim != len(self.input_shape_) + 1
            or X.shape[channel] != self.input_shape_[channel - 1]
        ):
            raise ValueError(
                f"X must have the layout seen in fit, per-image shape like {self.input_shape_}; "
                f"got {X.shape[1:]} (channels on axis {channel})."
            )
        return X

    def set_output(self, *, transform: str | None = None) -> ModelEstimator:
        """Accept ``Pipeline.set_output``; the output stays a NumPy array.

        Heatmaps and feature maps have more than two axes, which no DataFrame can hold, so
        the setting only matters for the steps after this one (:class:`HeatmapBoxes`, say).

        Parameters
        ----------
        transform : {"default", "pandas", "polars"}, default=None
            Ignored.

        Returns
        -------
        self : object
        """
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.target_tags.required = False
        tags.non_deterministic = False
        return tags
