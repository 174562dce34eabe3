"""What every explainer shares: binding the model, batching, targets, post-processing."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._utils import Interval, StrOptions, fit_context, spatial_axes
from ._frames import (
    SUPPORTED_FORMS,
    FrameRows,
    check_frame_axis,
    check_layout,
    image_channel_axis,
    layout_probe,
)
from ._heatmaps import to_heatmaps
from ._layouts import LAYOUTS, FeatureLayout, apply_layout, resolve_layout
from ._model_estimator import ModelEstimator
from ._validation import check_images, check_targets


@dataclass
class Explanation:
    """Everything an explainer computed for a batch of images.

    Attributes
    ----------
    heatmaps : ndarray of shape ``(n, k, *input_spatial)``, float32
        Maps in [0, 1] at the input's resolution, one per image and target. For clips
        (``frame_axis`` set), ``(n, k, T, *input_spatial)``: one map per frame, each
        scaled to [0, 1] on its own.
    maps : ndarray of shape ``(n, k, *layer_spatial)``, float32
        Raw maps at the layer's resolution. For L2-CAF, the filters themselves: signed
        and of unit L2 norm (``constraint="l2"``), or non-negative and summing to 1 (the
        softmax weights; the normalized Gaussian bump). For clips,
        ``(n, k, T, *layer_spatial)``.
    targets : ndarray of shape (n, k) or None
        Class indices explained; None when the map explains the whole output
        (class-oblivious L2-CAF, Grad-CAM of an embedding).
    outputs : ndarray of shape (n, d), float32
        The model's unfiltered output (logits or embedding).
    n_iter : ndarray of shape (n, k) or None
        Optimization iterations per map (L2-CAF; 0 where solved in closed form); for
        clips, ``(n, k, T)``.
    solvers : ndarray of shape (n, k) or None
        The solver each map actually came from (L2-CAF), as strings: ``"exact"``,
        ``"adam"``, ``"lbfgs"`` or ``"adam-lbfgs"``. It can differ from the fitted
        ``solver_`` (the solver chosen at fit): a closed-form filter that fails its check
        at the solution is optimized with ``"adam"``, and so is every filter of a
        ``constraint`` other than ``"l2"``. A filter restarted from a dead start is named
        after the solver that ran from the restart; one that no restart revived, after
        the solver that could not move it (a :class:`~sklearn_caf.DeadFilterWarning`
        reports it). For clips, ``(n, k, T)``. None for the explainers that do not
        optimize.
    params : ndarray of shape (n, k, n_spatial_axes) or None
        The optimized parameters where they are not the map itself: the means of
        L2-CAF's Gaussians (``constraint="gaussian"``), float32, in cell coordinates of
        ``maps`` (``params[i, j, a]`` is the position along the ``a``-th spatial axis of
        ``maps[i, j]``, 0 at the first cell's centre; it may lie outside the grid). None
        otherwise.
    """

    heatmaps: np.ndarray
    maps: np.ndarray
    targets: np.ndarray | None
    outputs: np.ndarray
    n_iter: np.ndarray | None = None
    params: np.ndarray | None = None
    solvers: np.ndarray | None = None


class BaseExplainer(ModelEstimator):
    """Base class of the explainers: images in, heatmaps out.

    Subclasses implement ``_explain_batch``, which returns ``(maps, n_iter)`` or
    ``(maps, n_iter, extras)``, ``extras`` a dict of optional per-map arrays (``"params"``,
    ``"solvers"``: the :class:`Explanation` fields of the same names); everything else
    (backend choice, splitting the model, batching, targets, resizing) is here.
    """

    _parameter_constraints: dict = {
        **ModelEstimator._parameter_constraints,
        "output": [None, Integral, str, callable],
        "top_k": [Interval(Integral, 1, None, closed="left")],
        "frame_axis": [None, Interval(Integral, 1, None, closed="left")],
        "layout": [StrOptions(set(LAYOUTS))],
        "grid": [None, tuple, list],
        "prefix_tokens": [None, Interval(Integral, 0, None, closed="left")],
    }

    # Subclasses that take clips have a ``frame_axis`` parameter; the others never do.
    frame_axis: int | None = None
    layout: str = "auto"
    grid: Any = None
    prefix_tokens: int | None = None

    # Whether this configuration explains classes (uses targets) or the whole output.
    @property
    def explains_classes(self) -> bool:
        """Whether this configuration explains classes (one map per target class) rather
        than the whole output (one map per image, ``targets`` refused)."""
        raise NotImplementedError

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> BaseExplainer:
        """Bind the model: pick its backend, split it at ``layer`` and check the shapes.

        Parameters
        ----------
        X : array-like of shape (n_images, ...)
            Images in the model's own layout (NCHW for PyTorch, NHWC for Keras), or
            pre-extracted feature maps when ``layer=None``. The first image is run through
            the model to check that ``layer`` gives spatial feature maps.
        y : None
            Ignored; per-image targets are given to :meth:`transform`.

        Returns
        -------
        self : object
            The fitted explainer.
        """
        X = self._bind(X, output=self.output)
        check_frame_axis(self.frame_axis, X.ndim)
        self.n_frames_ = None if self.frame_axis is None else int(X.shape[self.frame_axis])
        with self.bound_ as bound:
            a, context = self._first_pass(bound, X)
            feature_layout = self._resolve_layout(bound, X, a)
        self._feature_layout = feature_layout
        self.bound_ = apply_layout(self.bound_, feature_layout)
        self.layout_ = feature_layout.kind
        self.grid_ = feature_layout.grid
        self.prefix_tokens_ = feature_layout.prefix if feature_layout.grid else None
        with self.bound_ as bound:
            a, context = bound.trunk(bound.asarray(X[:1]))
            out = bound.head(a, context)
            self._check_feature_map(a)
            self._check_frame_rows(bound, X, a)
            self.layer_shape_ = tuple(int(s) for s in a.shape[1:])
            self.n_outputs_ = int(out.shape[1])
            self._check_top_k()
            self._fit_bound(bound, X[:1], a, context, out)
        return self

    def _resolve_layout(self, bound: Any, X: np.ndarray, a: Any) -> FeatureLayout:
        """The layout of ``layer``'s output (the ``layout`` parameter, or detected)."""
        channel = self._input_channel_axis(X.ndim)
        input_sizes = tuple(
            X.shape[ax] for ax in spatial_axes(X.ndim, channel) if ax != self.frame_axis
        )
        layout = self.layout
        if self.frame_axis is not None and layout == "auto":
            layout = "channels_first" if bound.channel_axis == 1 else "channels_last"
        feature_layout = resolve_layout(
            layout,
            self.grid,
            self.prefix_tokens,
            feature_shape=tuple(int(s) for s in a.shape),
            input_sizes=input_sizes,
            native_channel_axis=bound.channel_axis,
            layer=self.layer_,
        )
        if self.verbose:
            what = f"tokens, grid {feature_layout.grid} after {feature_layout.prefix} prefix"
            print(
                f"[{type(self).__name__}] layer={self.layer_!r} outputs shape "
                f"{tuple(a.shape)}: read as "
                f"{what if feature_layout.kind == 'tokens' else feature_layout.kind}"
            )
        return feature_layout

    def _frames(self) -> FrameRows:
        return FrameRows(getattr(self, "n_frames_", None))

    def _check_frame_rows(self, bound: Any, X: np.ndarray, a: Any) -> None:
        """The layer must give one row per image, or per frame (clip by clip) for clips."""
        rows, expected = int(a.shape[0]), self.n_frames_ or 1
        if rows == expected:
            if self.n_frames_ and self.n_frames_ > 1:
                first, second = (
                    bound.to_numpy(bound.trunk(bound.asarray(b))[0])
                    for b in layout_probe(X[:1], self.frame_axis)
                )
                check_layout(first, second, self.n_frames_, self.layer_)
            return
        if self.frame_axis is None:
            raise ValueError(
                f"layer={self.layer_!r} gives {rows} rows of feature maps for one input; a "
                f"clip model (X of shape (n_clips, T, ...)) whose per-frame CNN runs on "
                f"all frames at once is explained per frame with frame_axis=1."
            )
        raise ValueError(
            f"layer={self.layer_!r} gives {rows} rows of feature maps for one clip of "
            f"T={self.n_frames_} frames (frame_axis={self.frame_axis}); it must give one "
            f"per frame: {SUPPORTED_FORMS}."
        )

    def _input_channel_axis(self, ndim: int) -> int:
        return image_channel_axis(self.bound_.input_channel_axis, ndim, self.frame_axis)

    def _check_fitted_images(self, X: Any) -> np.ndarray:
        if self.frame_axis is None:
            return super()._check_fitted_images(X)
        check_is_fitted(self)
        X = check_images(X, self.bound_)
        if X.ndim != len(self.input_shape_) + 1:
            raise ValueError(
                f"X must have the layout seen in fit, per-clip shape like "
                f"{self.input_shape_}; got {X.shape[1:]}."
            )
        channel = self._input_channel_axis(X.ndim)
        if X.shape[self.frame_axis] != self.n_frames_ or (
            X.shape[channel] != self.input_shape_[channel - 1]
        ):
            raise ValueError(
                f"X must have clips of T={self.n_frames_} frames on axis "
                f"frame_axis={self.frame_axis} and {self.input_shape_[channel - 1]} channels "
                f"on axis {channel}, as seen in fit (per-clip shape {self.input_shape_}); "
                f"got {X.shape[1:]}."
            )
        return X

    def _check_top_k(self) -> None:
        # Explaining fewer classes than asked for would be a silent wrong result.
        if self.explains_classes and self.top_k > self.n_outputs_:
            raise ValueError(
                f"top_k={self.top_k} is larger than the number of classes the model outputs "
                f"({self.n_outputs_}); pass top_k <= {self.n_outputs_}."
            )

    def _fit_bound(self, bound: Any, X: np.ndarray, a: Any, context: Any, out: Any) -> None:
        """Hook for subclasses to decide things once the model is bound."""

    def _check_feature_map(self, a: Any) -> None:
        if len(a.shape) < 3:
            raise ValueError(
                f"layer={self.layer_!r} must output spatial feature maps (n, channels, h, w); "
                f"its output has shape {tuple(a.shape)}. Pick a convolutional layer."
            )

    def explain(self, X: Any, targets: Any = None) -> Explanation:
        """Explain ``X``: heatmaps and everything behind them.

        Parameters
        ----------
        X : array-like of shape (n_images, ...)
            Images in the model's layout.
        targets : array-like of shape (n_images,) or (n_images, k), default=None
            Class indices to explain. ``None`` explains the ``top_k`` predicted classes.
            Only for class explanations.

        Returns
        -------
        explanation : Explanation
            The heatmaps, the raw maps at the layer's resolution, the classes explained,
            the model's outputs and, for L2-CAF, the iterations used.
        """
        X = self._check_fitted_images(X)
        bound = self.bound_
        channel = self._input_channel_axis(X.ndim)
        if targets is not None:
            if not self.explains_classes:
                raise ValueError(
                    f"targets are only used when explaining classes; this configuration "
                    f"explains the whole output ({self._whole_output_reason()})."
                )
            targets = check_targets(targets, X.shape[0], self.n_outputs_)
        else:
            self._check_top_k()  # top_k may have been set after fit
        rng = check_random_state(getattr(self, "random_state", None))
        input_size = tuple(
            X.shape[ax] for ax in spatial_axes(X.ndim, channel) if ax != self.frame_axis
        )
        parts: list[tuple] = []
        with bound:
            for start in range(0, X.shape[0], self.batch_size):
                stop = min(start + self.batch_size, X.shape[0])
                x = bound.asarray(X[start:stop])
                a, context = bound.trunk(x)
                out = bound.head(a, context)
                out_np = bound.to_numpy(out)
                if targets is not None:
                    t = targets[start:stop]
                elif self.explains_classes:
                    t = np.argsort(-out_np, axis=1, kind="stable")[:, : self.top_k]
                else:
                    t = None
                # An optional third result: a dict of per-map extras, "params" (L2-CAF's
                # Gaussian means) and "solvers" (the solver each map came from).
                maps, n_iter, *extra = self._explain_batch(bound, x, a, context, out, t, rng)
                extra = extra[0] if extra else {}
                parts.append((maps, t, out_np, n_iter, extra.get("params"), extra.get("solvers")))
                if self.verbose:
                    print(f"[{type(self).__name__}] explained {stop}/{X.shape[0]} images")
        maps = np.concatenate([p[0] for p in parts])
        n_spatial = maps.ndim - 2 - (self.frame_axis is not None)
        if n_spatial != len(input_size):
            raise ValueError(
                f"layer={self.layer_!r} gives {n_spatial}-D maps but X has {len(input_size)} "
                f"spatial axes; cannot resize the maps onto the input."
            )
        raw = np.abs(maps) if self._signed_maps() else maps
        return Explanation(
            heatmaps=to_heatmaps(raw, input_size),
            maps=maps.astype(np.float32),
            targets=None if parts[0][1] is None else np.concatenate([p[1] for p in parts]),
            outputs=np.concatenate([p[2] for p in parts]).astype(np.float32),
            n_iter=None if parts[0][3] is None else np.concatenate([p[3] for p in parts]),
            params=None if parts[0][4] is None else np.concatenate([p[4] for p in parts]),
            solvers=None if parts[0][5] is None else np.concatenate([p[5] for p in parts]),
        )

    def _signed_maps(self) -> bool:
        return False

    def _whole_output_reason(self) -> str:
        return ""

    def transform(self, X: Any, targets: Any = None) -> np.ndarray:
        """Heatmaps of ``X`` in [0, 1] at the input's resolution.

        Parameters
        ----------
        X : array-like of shape (n_images, ...)
            Images in the model's layout.
        targets : array-like of shape (n_images,) or (n_images, k), default=None
            Class indices to explain (class explanations only); ``None`` explains the
            ``top_k`` predicted classes. Inside a :class:`~sklearn.pipeline.Pipeline`,
            pass them with metadata routing (``set_transform_request(targets=True)``).

        Returns
        -------
        heatmaps : ndarray of shape (n_images, H, W), or (n_images, k, H, W) when k > 1
            float32.
        """
        heatmaps = self.explain(X, targets).heatmaps
        return heatmaps[:, 0] if heatmaps.shape[1] == 1 else heatmaps

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Fit, then explain ``X``; ``y``, when given, is the classes to explain.

        This is how per-image labels reach the explainer in ``Pipeline.fit_transform(X, y)``.
        ``y`` is ignored when the explanation is not class-specific.

        Parameters
        ----------
        X : array-like or tensor of shape (n_images, ...)
            Images in the model's own layout (NCHW for PyTorch, NHWC for Keras).
        y : array-like of shape (n_images,) or (n_images, k), default=None
            Classes to explain per image (the ``targets`` of :meth:`transform`); ``None``
            explains the ``top_k`` predicted classes.
        **fit_params : dict
            Passed on to :meth:`fit`.

        Returns
        -------
        heatmaps : ndarray of shape (n_images, H, W), or (n_images, k, H, W) when k > 1
            float32 in [0, 1], at the input's resolution.
        """
        self.fit(X, **fit_params)
        return self.transform(X, targets=y if self.explains_classes else None)
