"""BR-NPA's Algorithm 1, written once against a minimal tensor-operations namespace.

Gomez et al., "Improve the Interpretability of Attention: A Fast, Accurate, and Interpretable
High-Resolution Attention Model". The algorithm follows the authors' implementation, which
differs from the paper's pseudo-code in two places: the activation is the feature norm
``||x_i|| + 1e-5`` (the paper writes ``||x_i||^2``), and the activation update uses the
similarities, ``a_i <- (1 - s_i) a_i`` (the paper writes the normalized weights ``w_i``).

The same function runs on NumPy arrays (:class:`NumpyOps`, here), on torch tensors
(``sklearn_caf_torch._ops.TorchOps``) and on TensorFlow tensors (the Keras layer), so that the
estimator, the ``nn.Module`` and the Keras layer are one algorithm, not three copies. Every op
is differentiable where it matters: the selected positions are constant indices (a one-hot
mask), while the similarities, the weights and the representative vectors carry gradients to
the features.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Any, NamedTuple

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._utils import Interval, StrOptions, fit_context

# The authors' constant: added to each feature norm, so it also sits in the cosine's
# denominator (the product of two such norms).
EPS = 1e-5


class PartsResult(NamedTuple):
    """Algorithm 1's outputs for a batch, in the namespace's own tensors.

    Attributes
    ----------
    vectors : tensor of shape (n, n_parts, C)
        The representative vectors, ranked (part 1 first).
    weights : tensor of shape (n, n_parts, L)
        The attention map of each part over the ``L`` spatial positions; each sums to 1.
    norms : tensor of shape (n, L)
        The feature norms ``||x_i|| + eps``: the initial activation.
    indices : tensor of shape (n, n_parts), integer
        The position selected for each part (constant: no gradient flows through it).
    """

    vectors: Any
    weights: Any
    norms: Any
    indices: Any


class NumpyOps:
    """The operations Algorithm 1 needs, for NumPy arrays.

    A namespace for another framework implements the same static methods with the same
    semantics (NumPy broadcasting, ``axis`` keywords). Arithmetic (``+ - * /``) and batched
    matrix products (``@``) are the arrays' own operators.
    """

    @staticmethod
    def sum(x: Any, axis: int, keepdims: bool = False) -> Any:
        return np.sum(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def sqrt(x: Any) -> Any:
        return np.sqrt(x)

    @staticmethod
    def argmax(x: Any, axis: int) -> Any:
        return np.argmax(x, axis=axis)

    @staticmethod
    def one_hot(indices: Any, depth: int, like: Any) -> Any:
        """Float one-hot rows (n, depth) of ``indices`` (n,), in ``like``'s dtype."""
        return (indices[:, np.newaxis] == np.arange(depth)).astype(like.dtype)

    @staticmethod
    def where(condition: Any, x: Any, y: Any) -> Any:
        return np.where(condition, x, y)

    @staticmethod
    def expand_dims(x: Any, axis: int) -> Any:
        return np.expand_dims(x, axis)

    @staticmethod
    def squeeze(x: Any, axis: int) -> Any:
        return np.squeeze(x, axis=axis)

    @staticmethod
    def stack(xs: list, axis: int) -> Any:
        return np.stack(xs, axis=axis)

    @staticmethod
    def random_uniform(like: Any, rng: Any) -> Any:
        """Uniform noise in [0, 1) of ``like``'s shape and dtype."""
        return check_random_state(rng).random_sample(like.shape).astype(like.dtype)


def check_layer_params(n_parts: Any, selection: str) -> None:
    """The checks every trainable BR-NPA layer makes on its arguments (torch, Keras)."""
    if not isinstance(n_parts, int) or isinstance(n_parts, bool) or n_parts < 1:
        raise ValueError(f"n_parts must be a positive int; got {n_parts!r}.")
    if selection not in ("active", "random"):
        raise ValueError(f"selection must be 'active' or 'random'; got {selection!r}.")


def representative_vectors(
    x: Any,
    n_parts: int,
    ops: Any = NumpyOps,
    *,
    selection: str = "active",
    refine: bool = True,
    rng: Any = None,
    eps: float = EPS,
) -> PartsResult:
    """Algorithm 1: ``n_parts`` ranked representative vectors and their attention maps.

    Parameters
    ----------
    x : tensor of shape (n, L, C)
        Feature vectors, channels last, the ``L`` spatial positions flattened. Expected
        non-negative (the output of a ReLU), as in the paper: similarities are not clamped.
    n_parts : int
        Number of parts ``N``.
    ops : namespace, default=NumpyOps
        The tensor operations (see :class:`NumpyOps`).
    selection : {"active", "random"}, default="active"
        ``"active"``: each part starts from the position of highest activation.
        ``"random"`` (the ablation of Table 4): ``n_parts`` distinct positions drawn
        uniformly at random.
    refine : bool, default=True
        ``False`` (the ablation of Table 4): each part is the selected vector itself (its map
        is one-hot), not the similarity-weighted mean. The activation is still updated with
        the similarities, so that the next part starts elsewhere.
    rng : object, default=None
        Passed to ``ops.random_uniform`` (a seed or ``RandomState`` for :class:`NumpyOps`).
    eps : float, default=1e-5
        Added to every feature norm.

    Returns
    -------
    PartsResult
    """
    n_positions = x.shape[1]
    squares = ops.sum(x * x, axis=-1)  # (n, L)
    # sqrt has an infinite slope at 0, and all-zero vectors are common after a ReLU: take the
    # root of 1 there instead and zero it, so that the gradient is 0 rather than NaN.
    nonzero = squares > 0
    norms = ops.where(nonzero, ops.sqrt(ops.where(nonzero, squares, squares * 0 + 1)), squares * 0)
    norms = norms + eps
    activation = norms
    if selection == "random":
        # Ranking uniform noise instead of the activation draws distinct positions uniformly.
        noise = ops.random_uniform(norms, rng)
    vectors, weights, indices = [], [], []
    for _ in range(n_parts):
        if selection == "random":
            index = ops.argmax(noise, axis=-1)
        else:
            index = ops.argmax(activation, axis=-1)
        mask = ops.one_hot(index, n_positions, norms)  # (n, L): a constant, no gradient
        selected = ops.squeeze(ops.expand_dims(mask, 1) @ x, 1)  # (n, C)
        selected_norm = ops.sum(mask * norms, axis=-1, keepdims=True)  # (n, 1)
        dots = ops.squeeze(x @ ops.expand_dims(selected, -1), -1)  # (n, L)
        similarity = dots / (norms * selected_norm)
        if refine:
            total = ops.sum(similarity, axis=-1, keepdims=True)
            # An all-zero feature map (a dead layer) has no similar vector at all: spread the
            # weight uniformly rather than return 0/0. The safe denominator keeps the
            # gradient of the other branch finite.
            valid = total > 0
            safe_total = ops.where(valid, total, total * 0 + 1)
            weight = ops.where(valid, similarity / safe_total, similarity * 0 + 1 / n_positions)
            vector = ops.squeeze(ops.expand_dims(weight, 1) @ x, 1)
        else:
            weight, vector = mask, selected
        activation = (1 - similarity) * activation
        if selection == "random":
            noise = ops.where(mask > 0, noise * 0 - 1, noise)
        vectors.append(vector)
        weights.append(weight)
        indices.append(index)
    return PartsResult(
        vectors=ops.stack(vectors, axis=1),
        weights=ops.stack(weights, axis=1),
        norms=norms,
        indices=ops.stack(indices, axis=1),
    )


# -- the scikit-learn transformer -------------------------------------------------------------


@dataclass
class BRNPAParts:
    """Everything :class:`BRNPAPooling` computes for a batch of feature maps.

    Attributes
    ----------
    vectors : ndarray of shape (n, n_parts, C)
        The representative vectors, ranked: part 1 first.
    maps : ndarray of shape (n, n_parts, \\*spatial)
        The attention map of each part at the feature maps' resolution; each sums to 1.
    feature_norms : ndarray of shape (n, \\*spatial)
        The norm of each feature vector (plus 1e-5): the activation that ranks the parts and
        the brightness of :func:`~sklearn_caf.plotting.part_map_rgb`.
    part_norms : ndarray of shape (n, n_parts)
        The norm of each representative vector: how active each part is. A part whose norm
        is small next to part 1's contributes little to a linear classifier on top.
    locations : ndarray of shape (n, n_parts, n_spatial), int
        The position (row, column for 2-D maps) of the vector each part started from.
    """

    vectors: np.ndarray
    maps: np.ndarray
    feature_norms: np.ndarray
    part_norms: np.ndarray
    locations: np.ndarray


def _host_array(X: Any) -> Any:
    """A NumPy view of a framework tensor, by duck typing: the core imports no framework."""
    if isinstance(X, np.ndarray):
        return X
    if hasattr(X, "detach") and hasattr(X, "cpu"):  # torch, also on a GPU or with grad
        return X.detach().cpu().numpy()
    if hasattr(X, "numpy") and hasattr(X, "shape"):  # TensorFlow eager tensors
        return X.numpy()
    return X


def check_feature_maps(X: Any, channel_axis: int, *, name: str = "X") -> np.ndarray:
    """``X`` as a non-negative float array (n, C, *spatial) with at least one spatial axis."""
    X = _host_array(X)
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} must be an array of feature maps; {exc}") from exc
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold numbers; got dtype {arr.dtype}.")
    if arr.ndim < 3:
        raise ValueError(
            f"{name} must be feature maps of shape (n_samples, channels, height, width) (or "
            f"channels last with channel_axis=-1); got an array of shape {arr.shape}."
        )
    if not -arr.ndim < channel_axis < arr.ndim or channel_axis % arr.ndim == 0:
        raise ValueError(
            f"channel_axis must name a non-batch axis of {name} (1 to {arr.ndim - 1}, or "
            f"negative); got channel_axis={channel_axis} for shape {arr.shape}."
        )
    if arr.shape[0] == 0 or arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}).")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    if (arr < 0).any():
        raise ValueError(
            f"{name} must be non-negative feature maps, as after a ReLU (BR-NPA's "
            f"similarities are cosines and are not clamped); got a minimum of {arr.min():g}."
        )
    return np.moveaxis(arr, channel_axis, 1)


class BRNPAPooling(TransformerMixin, BaseEstimator):
    """Bilinear representative non-parametric attention (BR-NPA) pooling.

    Replaces global average pooling of CNN feature maps by ``n_parts`` ranked
    *representative vectors* (Algorithm 1 of Gomez et al.): the most active feature vector
    (largest norm) is refined into the mean of all vectors weighted by their cosine
    similarity to it; the activations are then damped where the similarity was high,
    ``a <- (1 - s) a``, and the next part starts from the most active vector left. The
    similarity weights of each part are its attention map. Nothing is learned: ``fit`` only
    records the number of channels.

    Read more in the :ref:`User Guide <brnpa>`.

    Parameters
    ----------
    n_parts : int, default=3
        Number of parts ``N``; :meth:`transform` returns ``N * C`` features.
    channel_axis : int, default=1
        Axis of the channels in ``X``: 1 for channels-first maps (PyTorch, NCHW), -1 for
        channels-last ones (Keras, NHWC).
    selection : {"active", "random"}, default="active"
        How each part's starting vector is chosen: the most active one (BR-NPA), or
        ``n_parts`` distinct positions drawn uniformly (the "random" ablation of the paper's
        Table 4).
    refine : bool, default=True
        Whether each part is the similarity-weighted mean of the vectors (BR-NPA) or just
        the starting vector, with a one-hot map (the "no refinement" ablation).
    random_state : int, RandomState instance or None, default=None
        Seeds ``selection="random"``; each call to :meth:`transform` starts from it afresh.

    Attributes
    ----------
    n_channels_ : int
        Number of channels ``C`` seen in :meth:`fit`.
    channel_names_ : ndarray of shape (C,), object
        Channel names used by :meth:`get_feature_names_out` (``"channel0"``, ...).

    See Also
    --------
    FeatureMapExtractor : Feature maps of a network's layer, the usual input.
    sklearn_caf_torch.brnpa.BRNPAPool2d : The same pooling as a trainable PyTorch layer.

    Notes
    -----
    The activation is the feature norm plus 1e-5, which also sits in the cosine's
    denominator, as in the authors' code. Features are expected non-negative (after a ReLU):
    the similarities are not clamped, so negative features are rejected. An all-zero feature
    map gives uniform weights.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf import BRNPAPooling
    >>> X = np.zeros((1, 2, 2, 2))          # one sample, C=2 channels, 2x2 positions
    >>> X[0, :, 0, 0] = [3.0, 0.0]          # the most active vector
    >>> X[0, :, 1, 1] = [0.0, 1.0]          # orthogonal to it
    >>> pool = BRNPAPooling(n_parts=2).fit(X)
    >>> pool.transform(X).round(3)
    array([[3., 0., 0., 1.]])
    >>> pool.attention_maps(X)[0, 0]
    array([[1., 0.],
           [0., 0.]])
    >>> pool.get_feature_names_out()[:3]
    array(['part1_channel0', 'part1_channel1', 'part2_channel0'], dtype=object)
    """

    _parameter_constraints: dict = {
        "n_parts": [Interval(Integral, 1, None, closed="left")],
        "channel_axis": [Integral],
        "selection": [StrOptions({"active", "random"})],
        "refine": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        n_parts: int = 3,
        channel_axis: int = 1,
        selection: str = "active",
        refine: bool = True,
        random_state: Any = None,
    ):
        self.n_parts = n_parts
        self.channel_axis = channel_axis
        self.selection = selection
        self.refine = refine
        self.random_state = random_state

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> BRNPAPooling:
        """Record the number of channels of ``X``.

        Parameters
        ----------
        X : array-like or tensor of shape (n_samples, C, \\*spatial)
            Non-negative feature maps, channels on ``channel_axis``. NumPy arrays, PyTorch
            tensors and TensorFlow tensors are accepted.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted transformer.
        """
        X = check_feature_maps(X, self.channel_axis)
        self.n_channels_ = int(X.shape[1])
        self.channel_names_ = np.asarray(
            [f"channel{c}" for c in range(self.n_channels_)], dtype=object
        )
        return self

    def explain(self, X: Any) -> BRNPAParts:
        """Representative vectors, attention maps and activations of ``X``.

        Parameters
        ----------
        X : array-like or tensor of shape (n_samples, C, \\*spatial)
            Non-negative feature maps, channels on ``channel_axis``. The spatial size may
            differ from the one seen in :meth:`fit`; the channels may not.

        Returns
        -------
        parts : BRNPAParts
            The ranked vectors, their attention maps, the feature norms, the parts' norms
            and the starting positions.
        """
        check_is_fitted(self)
        X = check_feature_maps(X, self.channel_axis)
        if X.shape[1] != self.n_channels_:
            raise ValueError(
                f"X has {X.shape[1]} channels on axis {self.channel_axis}, but BRNPAPooling "
                f"was fitted with {self.n_channels_}."
            )
        n, spatial = X.shape[0], X.shape[2:]
        n_positions = int(np.prod(spatial))
        if self.selection == "random" and self.n_parts > n_positions:
            # Beyond L, "distinct positions" would silently repeat one.
            raise ValueError(
                f"n_parts={self.n_parts} distinct random positions cannot be drawn from a "
                f"feature map of {n_positions} positions (spatial shape {tuple(spatial)}); "
                f"pass n_parts <= {n_positions}."
            )
        flat = np.moveaxis(X.reshape(n, self.n_channels_, -1), 1, -1)  # (n, L, C)
        result = representative_vectors(
            flat,
            self.n_parts,
            NumpyOps,
            selection=self.selection,
            refine=self.refine,
            rng=check_random_state(self.random_state),
        )
        return BRNPAParts(
            vectors=result.vectors,
            maps=result.weights.reshape(n, self.n_parts, *spatial),
            feature_norms=result.norms.reshape(n, *spatial),
            part_norms=np.linalg.norm(result.vectors, axis=-1),
            locations=np.stack(np.unravel_index(result.indices, spatial), axis=-1),
        )

    def transform(self, X: Any) -> np.ndarray:
        """The concatenated representative vectors of ``X``.

        Parameters
        ----------
        X : array-like or tensor of shape (n_samples, C, \\*spatial)
            Non-negative feature maps, channels on ``channel_axis``.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_parts * C)
            Part 1's ``C`` features, then part 2's, and so on. float32 for float32 input,
            else float64.
        """
        vectors = self.explain(X).vectors
        return vectors.reshape(vectors.shape[0], -1)

    def attention_maps(self, X: Any) -> np.ndarray:
        """The ranked attention maps of ``X`` at the feature maps' resolution.

        Parameters
        ----------
        X : array-like or tensor of shape (n_samples, C, \\*spatial)
            Non-negative feature maps, channels on ``channel_axis``.

        Returns
        -------
        maps : ndarray of shape (n_samples, n_parts, \\*spatial)
            The similarity weights of each part; each map sums to 1.
        """
        return self.explain(X).maps

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output features: ``part{k}_{channel}``, part by part.

        Parameters
        ----------
        input_features : array-like of str, default=None
            Names of the ``C`` channels; ``None`` uses ``channel0``, ``channel1``, ...

        Returns
        -------
        feature_names_out : ndarray of str objects
            ``n_parts * C`` names, ``part1_channel0`` first.
        """
        check_is_fitted(self)
        names = self.channel_names_
        if input_features is not None:
            names = np.asarray(input_features, dtype=object)
            if names.shape != (self.n_channels_,):
                raise ValueError(
                    f"input_features must name the {self.n_channels_} channels; got "
                    f"{names.shape[0] if names.ndim == 1 else names.shape} names."
                )
        return np.asarray(
            [f"part{k + 1}_{name}" for k in range(self.n_parts) for name in names], dtype=object
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.target_tags.required = False
        tags.non_deterministic = False
        return tags
