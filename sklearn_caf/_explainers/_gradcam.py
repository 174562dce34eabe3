"""Grad-CAM (Selvaraju et al., ICCV 2017) for classes and for embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._utils import StrOptions, spatial_axes
from ..backend import compiled
from ._base import BaseExplainer


class _WeightedCAM:
    """Grad-CAM's maps as a pure function of tensors, ``(a, context, weights) -> maps``.

    The score is ``sum_j weights_j y_j`` (a one-hot row for a class, ones for an
    embedding). One object per explainer configuration, so that a backend compiles it
    once (``BoundModel.compile``) for every batch.
    """

    def __init__(self, bound: Any, activation: str):
        self.bound, self.activation = bound, activation

    def __call__(self, a: Any, context: tuple, weights: Any) -> Any:
        bound = self.bound

        def score(features):
            return bound.sum(bound.head(features, context) * weights, axis=1)

        _, grad = bound.value_and_grad(score, a)
        axes = spatial_axes(len(a.shape), bound.channel_axis)
        alpha = bound.mean(grad, axis=axes, keepdims=True)
        cam = bound.sum(alpha * a, axis=bound.channel_axis)
        return bound.relu(cam) if self.activation == "relu" else bound.abs(cam)


class GradCAMExplainer(BaseExplainer):
    """Gradient-weighted class activation maps, for classification and retrieval networks.

    The channels of ``layer``'s feature maps ``A`` are weighted by the spatial mean of the
    gradient of a score: ``alpha_k = mean(d y / d A_k)`` and the map is
    ``act(sum_k alpha_k A_k)`` (Eq. 4-5 of the L2-CAF paper). The score is a class logit
    (``objective="class"``), or the sum of the embedding's dimensions for retrieval
    networks (``objective="embedding"``, Eq. 6). ``activation="abs"`` gives Grad-CAM-abs
    (Eq. 7), which keeps the negatively contributing regions that matter for embeddings.

    Parameters
    ----------
    model : object
        A PyTorch ``nn.Module`` or a Keras model. Never modified.
    layer : str or None, default=None
        Dotted module path of a convolutional layer; ``None`` uses the input itself.
        ``"auto"`` finds the last spatial feature map the output depends on (see
        :ref:`auto-layer`); ``layer_`` says which.
    objective : {"class", "embedding"}, default="class"
        Explain class logits or a whole embedding.
    activation : {"relu", "abs"}, default="relu"
        Applied to the weighted sum: ReLU (Grad-CAM) or absolute value (Grad-CAM-abs).
    top_k : int, default=1
        With ``objective="class"`` and no targets: explain the ``top_k`` predicted classes.
        More than the model's number of classes is an error.
    output : None, int, str or callable, default=None
        Which model output to explain (tuple index, dict key, or a callable).
    batch_size : int, default=32
        Images explained together (one trunk pass and one gradient per batch). Larger
        batches are faster on a GPU and take more memory; the maps do not depend on it.
    device : str, default="auto"
        ``"auto"`` runs where the model is when it is on a GPU, else on the first GPU
        when one is present, else on the CPU; or ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    backend : str, Backend or None, default=None
        Force a backend (a name such as ``"torch"``, a backend class or an instance);
        ``None`` detects it from the model.
    verbose : int, default=0
        ``0`` prints nothing; ``1`` or more prints one line per batch explained.
    frame_axis : int or None, default=None
        For clip models: the axis of ``X`` that holds the frames (``1`` for ``X`` of
        shape ``(n_clips, T, ...)``, each frame an image in the model's layout). The
        model runs ``layer``'s per-frame CNN on all ``n_clips * T`` frames at once, clip
        by clip (PyTorch: ``x.flatten(0, 1)``; Keras: inside ``TimeDistributed``), and
        fuses the frames (an LSTM, say). One map per frame: ``transform`` gives
        ``(n_clips, T, H, W)`` (see :ref:`frames`).
    layout : {"auto", "channels_first", "channels_last", "tokens"}, default="auto"
        How ``layer``'s output holds its channels. ``"auto"`` reads it off the first
        image in :meth:`fit`: the framework's own layout (PyTorch channels first, Keras
        channels last) unless only the other one has spatial axes that shrink the input
        by one stride (Swin and ConvNeXt blocks in PyTorch output ``(n, h, w, channels)``);
        tokens ``(n, n_tokens, channels)`` of a 2-D image model are a grid of patch tokens
        after a few prefix tokens (vision transformers). ``"nchw"`` and ``"nhwc"`` are
        aliases of ``"channels_first"`` and ``"channels_last"``. See :ref:`layouts`.
    grid : tuple of 2 int or None, default=None
        With tokens: the patch grid ``(h, w)``, when it cannot be read off the shapes.
    prefix_tokens : int or None, default=None
        With tokens: how many tokens come before the patch tokens (a class token,
        distillation and register tokens); they reach the head unfiltered.

    Attributes
    ----------
    layer_ : str or None
        The layer explained: ``layer``, or the one ``layer="auto"`` found.
    backend_ : Backend
        The backend that runs the model.
    bound_ : BoundModel
        The model split at ``layer``.
    input_shape_ : tuple
        Per-image shape seen in fit.
    layer_shape_ : tuple
        Per-image shape of the layer's feature maps.
    n_outputs_ : int
        Size of the model's output (classes or embedding dimensions).
    split_ : str or None
        How the backend split the model at ``layer``: PyTorch ``"fx"``, ``"export"`` or
        ``"hooks"`` (see the Backends page), Keras ``"graph"`` or ``"intercept"``;
        ``"input"`` for ``layer=None``.
    n_frames_ : int or None
        Frames per clip seen in fit (``frame_axis`` set), else ``None``.
    layout_ : {"channels_first", "channels_last", "tokens"}
        The layout of ``layer``'s output the maps were computed in.
    grid_ : tuple of int or None
        For tokens, the patch grid ``(h, w)`` the maps have; else ``None``.
    prefix_tokens_ : int or None
        For tokens, the number of prefix tokens; else ``None``.

    See Also
    --------
    L2CAFExplainer : Attention by a constrained attention filter.

    Examples
    --------
    >>> import torch
    >>> from sklearn_caf import GradCAMExplainer
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4, 2))
    >>> images = torch.rand(2, 3, 8, 8).numpy()
    >>> GradCAMExplainer(model=net, layer="1", top_k=2).fit_transform(images).shape
    (2, 2, 8, 8)
    """

    _parameter_constraints: dict = {
        **BaseExplainer._parameter_constraints,
        "objective": [StrOptions({"class", "embedding"})],
        "activation": [StrOptions({"relu", "abs"})],
    }

    def __init__(
        self,
        *,
        model: Any = None,
        layer: str | None = None,
        objective: str = "class",
        activation: str = "relu",
        top_k: int = 1,
        output: Any = None,
        batch_size: int = 32,
        device: str = "auto",
        backend: Any = None,
        verbose: int = 0,
        frame_axis: int | None = None,
        layout: str = "auto",
        grid: Any = None,
        prefix_tokens: int | None = None,
    ):
        self.model = model
        self.layer = layer
        self.objective = objective
        self.activation = activation
        self.top_k = top_k
        self.output = output
        self.batch_size = batch_size
        self.device = device
        self.backend = backend
        self.verbose = verbose
        self.frame_axis = frame_axis
        self.layout = layout
        self.grid = grid
        self.prefix_tokens = prefix_tokens

    @property
    def explains_classes(self) -> bool:
        """True for ``objective="class"``: one map per explained class."""
        return self.objective == "class"

    def _whole_output_reason(self) -> str:
        return "objective='embedding'"

    def _fit_bound(self, bound: Any, X: np.ndarray, a: Any, context: Any, out: Any) -> None:
        self._cam_cache = {}  # compiled functions belong to the previous bound model

    def _cam(self, bound: Any) -> Any:
        cache = self.__dict__.setdefault("_cam_cache", {})
        key = (id(bound), self.activation)
        if key not in cache:
            cache[key] = compiled(bound, _WeightedCAM(bound, self.activation))
        return cache[key]

    def _explain_batch(self, bound, x, a, context, out, targets, rng):
        # For clips the head maps a clip's T rows of ``a`` to its output, so the gradient
        # of a clip's score holds every frame's gradient: alpha is pooled per frame.
        frames = self._frames()
        n = int(out.shape[0])
        k = 1 if targets is None else targets.shape[1]
        rows = np.repeat(np.arange(n), k)
        if k > 1:
            a_rows = bound.take(a, frames.rows(rows))
            flags = frames.frame_level(context, n)
            ctx = frames.take_context(bound, context, flags, rows)
        else:
            a_rows, ctx = a, context

        if targets is None:
            weights = np.ones((1, self.n_outputs_), dtype=np.float32)
        else:
            weights = np.eye(self.n_outputs_, dtype=np.float32)[targets.reshape(-1)]
        cam = self._cam(bound)(a_rows, tuple(ctx), bound.asarray(weights))
        maps = bound.to_numpy(cam)
        per_frame = (frames.n_frames,) if frames.n_frames else ()
        return maps.reshape(n, k, *per_frame, *maps.shape[1:]), None
