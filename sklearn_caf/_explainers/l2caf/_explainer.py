"""L2-CAF: the unit-L2-norm constrained attention filter (Taha et al., ECCV 2020)."""

from __future__ import annotations

import warnings
from dataclasses import replace
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from ..._utils import Interval, StrOptions, caller_stacklevel
from ...backend import compiled
from .._base import BaseExplainer
from . import _exact
from ._adam import AdamSchedule, AdamSteps, MapSettle, minimize_rows
from ._adam_lbfgs import minimize_rows_adam_lbfgs
from ._lbfgs import LBFGSOptions, ValueAndGrad, minimize_rows_lbfgs
from ._problem import (
    _DEAD_RTOL,
    _effect_residual,
    _filter_shape,
    _FilterLoss,
    _FilterProblem,
    _one_hot,
    _vanishing,
)

# solver="adam-lbfgs": Adam iterations before L-BFGS, per objective, and L-BFGS's first and
# largest turns (radians), small so that it stays in the basin Adam's first steps chose.
# The iterations are the fewest of those tried after which L-BFGS ended where 1000 Adam
# iterations end (map correlation >= 0.99 on every image) on EfficientNet-Lite0's
# _blocks.10 and the test networks; fewer leave some images in another basin
# (class-oblivious, _blocks.10: 0.87 after 20, 0.96 after 50, 0.97 after 100; see
# benchmarks/README.md, "L2-CAF inside the network").
_WARM_ITER = {"class-oblivious": 150, "class-specific": 100}
_WARM_FIRST_ANGLE = 0.05
_WARM_MAX_ANGLE = 0.2

# Explanation.solvers: one of these names per filter.
_SOLVER_DTYPE = np.dtype(f"<U{max(map(len, ('exact', 'adam', 'lbfgs', 'adam-lbfgs')))}")

# Head evaluations per call while probing a head (elements of the filtered feature maps).
_PROBE_BUDGET = 2**24


# A softmax restart on r cells gives the other cells logits this much lower: their weights
# are e^-10 (about 5e-5) of a chosen cell's, so the restart is close to the uniform filter
# on the r cells, yet their gradients are not lost in float32 and Adam can bring them back.
_SOFTMAX_OFF = 10.0


class DeadFilterWarning(UserWarning):
    """An L2-CAF filter could not move from its start: its map is uniform, not a result.

    Raised when the loss has no gradient at the initial filter (typically every unit of
    the head is switched off by the attenuation a unit-norm filter applies, as before a
    batch norm and a ReLU) and no one-cell start revives it, or when a map comes out
    constant for any other reason.
    """


class L2CAFExplainer(BaseExplainer):
    """Attention maps by the unit-L2-norm constrained attention filter (L2-CAF).

    A spatial filter ``f`` of unit L2 norm multiplies the feature maps of ``layer``; it is
    optimized so that the filtered output matches the unfiltered one (class-oblivious,
    Eq. 1 of the paper) or favours one class over all others (class-specific, Eq. 2). The
    heatmap is ``|f|``, resized to the input and scaled to [0, 1]. Works for
    classification networks (logits) and retrieval networks (raw embeddings). The paper's
    alternative constraints (Sec. 4.4), a softmax over the cells and a Gaussian bump, are
    ``constraint="softmax"`` and ``"gaussian"``; see :ref:`l2caf_constraints`.

    Parameters
    ----------
    model : object
        A PyTorch ``nn.Module`` or a Keras model (any framework with an installed
        backend). Never modified: weights, mode and gradient flags are as before.
    layer : str or None, default=None
        The layer whose output is filtered: a dotted module path (``"layer4"``,
        ``"features.28"``). ``None`` filters the input itself, for pre-extracted
        feature maps. ``"auto"`` finds the last spatial feature map the output depends on (see
        :ref:`auto-layer`); ``layer_`` says which.
    objective : {"class-oblivious", "class-specific"}, default="class-oblivious"
        Eq. 1 (one map per image, for classification or retrieval) or Eq. 2 (one map
        per explained class; logits only).
    constraint : {"l2", "softmax", "gaussian"}, default="l2"
        What the optimized filter is (Sec. 4.4 of the paper). ``"l2"``: ``f / ||f||``, a
        signed map of unit L2 norm. ``"softmax"``: ``softmax(f)`` over all cells,
        non-negative and summing to 1; ``f`` has the map's shape and starts per ``init``.
        ``"gaussian"``: ``exp(-||p - mu||^2 / 2)`` over the cells ``p`` (identity
        covariance, in cells) divided by its sum, so that it also sums to 1 (the
        authors' normalization; it scales the map, never changes its shape); only the
        mean ``mu`` (one number per spatial axis) is optimized, from the grid's centre.
        ``mu`` is not confined to the grid: where the loss keeps falling as the bump
        moves past an edge, the mean leaves the grid and the map is the bump's tail,
        its weight piled on the edge cells. The means are :attr:`Explanation.params`.
        Both objectives and both variants work with every constraint; the ``"exact"``
        and ``"lbfgs"`` solvers only with ``"l2"`` (they work on the unit sphere).
    top_k : int, default=1
        With ``objective="class-specific"`` and no targets: explain the ``top_k``
        predicted classes. More than the model's number of classes is an error.
    variant : {"fast", "vanilla"}, default="fast"
        ``"fast"`` (Eq. 3) runs the trunk once and optimizes through the head only;
        ``"vanilla"`` runs the whole network at every iteration. Both have the same optimum.
    solver : {"auto", "exact", "adam-lbfgs", "lbfgs", "adam"}, default="auto"
        ``"exact"`` solves the problem in closed form, which requires the head to be
        affine in the filter (global average pooling then linear layers); it is
        checked numerically at fit and at every solution (rows where it fails are
        solved with Adam). ``"adam"`` runs the authors' optimizer (Adam, learning rate
        decaying linearly). ``"lbfgs"`` is a Riemannian L-BFGS on the unit sphere with an
        Armijo line search: one head evaluation per iteration, like Adam, but tens of
        them instead of hundreds on heads that are not affine (it may stop at another
        local optimum than Adam's). ``"adam-lbfgs"`` runs the authors' Adam for its
        first iterations (exactly those of ``"adam"``, which choose the optimum's basin)
        until each filter's map has settled (correlation >= 0.9995 with the map 10
        iterations earlier, checked every 10), at most 150 for the class-oblivious
        objective and 100 for the class-specific one, then L-BFGS with short first
        steps down to the bottom of that basin:
        the optimum of 1000 Adam iterations (map correlation >= 0.99 on every image)
        with fewer head evaluations and a bounded count (on EfficientNet-Lite0's
        ``_blocks.10``: 104-106 class-specific, 30x Grad-CAM, against Adam's 151-201 and
        53x; 155 class-oblivious, 58x, against 151-251 and 80x). ``"auto"`` uses ``"exact"``
        where the check passes, else ``"adam-lbfgs"``. ``"exact"``, ``"lbfgs"`` and
        ``"adam-lbfgs"`` need ``constraint="l2"`` (an error otherwise); ``"auto"`` uses
        ``"adam"`` for the other constraints.
    max_iter : int, default=1000
        Maximum Adam iterations, or L-BFGS head evaluations, per filter (for
        ``"adam-lbfgs"``, both together).
    tol : float, default=1e-5
        Convergence. Adam: stop a filter when its loss changed by less than
        ``tol * max(1, |loss|)`` over ``check_every`` iterations (paper: 1e-5, d = 50);
        where the loss at the start, ``L0``, is below 1, by less than
        ``tol * max(|L0|, |loss|)``: the same test in units of the start, so that a loss
        of 1e-10 throughout (a network with tiny outputs) does not pass it at once,
        wherever the filter is. Where every component of a filter's gradient at the start
        is below Adam's ``eps`` (1e-8), ``eps`` shrinks below the gradient (else it would
        outweigh it and Adam would crawl); elsewhere the update is exactly the authors'.
        L-BFGS (also the second phase of ``"adam-lbfgs"``): stop when a step turns the
        filter (and so moves the map) by less than ``sqrt(tol)`` radians; near a
        minimum the loss then changes by about ``tol``.
    check_every : int, default=50
        The paper's ``d``: Adam's loss checks (also during the Adam iterations of
        ``"adam-lbfgs"``, whose L-BFGS phase then continues every filter).
    learning_rate : float, default=0.5
        Adam's initial learning rate; it decays linearly to ``final_learning_rate`` at
        ``max_iter`` (the authors' schedule).
    final_learning_rate : float, default=1e-5
        Adam's learning rate at ``max_iter``, the end of the linear decay (the authors'
        value).
    init : {"ones", "uniform", "normal"} or ndarray, default="ones"
        Initial filter: all ones (the authors' PyTorch code; deterministic, so a batch
        gives the same maps as its images one by one), U[0, 1] (the paper), N(0, 1) (the
        authors' TensorFlow code), or an array of the layer's spatial shape (for
        ``constraint="softmax"`` these are the logits ``f``). For
        ``constraint="gaussian"`` it is the initial mean: ``"ones"`` the grid's centre
        ``((h - 1) / 2, (w - 1) / 2)``, ``"uniform"`` uniform over the grid, ``"normal"``
        the centre plus N(0, 1) cells, or an array of shape ``(n_spatial_axes,)``. A start
        where the loss has no gradient (a *dead start*: the unit-norm filter attenuates
        the features by about ``1 / sqrt(cells)``, which can switch off every unit of a
        head with a batch norm and a ReLU) restarts from the uniform filter on the
        image's ``r`` strongest cells (largest feature norm), ``r = cells / 2, cells / 4,
        ..., 1``, the largest ``r`` with a gradient. Where none has one, the map is
        uniform and a :class:`DeadFilterWarning` names the layer; no constant map is
        returned without it. The softmax restarts the same way (its uniform start
        attenuates by ``1 / cells``, even more); a dead Gaussian restarts once, with its
        mean on the strongest cell, and a Gaussian that stays dead (its bump would sit
        where it started, saying nothing about the image) is reported by the same
        warning.
    output : None, int, str or callable, default=None
        Which model output to explain when the model returns a tuple (index), a dict
        (key), or anything else (a callable mapping it to an (n, d) tensor).
    batch_size : int, default=32
        Images explained together: one trunk pass and one batch of filters optimized at
        once. Larger batches are faster on a GPU and take more memory; the maps do not
        depend on it.
    device : str, default="auto"
        ``"auto"`` uses a GPU when present; or ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    backend : str, Backend or None, default=None
        Force a backend; ``None`` detects it from the model.
    random_state : int, RandomState instance or None, default=None
        Seeds the ``"uniform"`` and ``"normal"`` initial filters.
    verbose : int, default=0
        ``0`` prints nothing; ``1`` or more prints one line per batch explained and the
        number of dead starts restarted.
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
    filter_shape_ : tuple
        Spatial shape of the filter (the layer's feature maps without channels).
    solver_ : {"exact", "adam-lbfgs", "lbfgs", "adam"}
        The solver chosen at fit for this model and layer (``solver``, or what
        ``"auto"`` picked): the one tried first on every filter, not necessarily the one
        every filter came from. :attr:`Explanation.solvers <sklearn_caf.Explanation>`
        names, filter by filter, the solver that produced it: with ``"exact"``, a filter
        that fails the affine check at its image's probes or at its solution is optimized
        with ``"adam"``; ``"adam-lbfgs"`` with ``max_iter`` at or below its Adam
        iterations (150 class-oblivious, 100 class-specific) is ``"adam"`` alone; a
        ``constraint`` other than ``"l2"`` set after fit is solved with ``"adam"``.
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
    GradCAMExplainer : Gradient-weighted class activation maps.

    References
    ----------
    A. Taha, X. Yang, A. Shrivastava, L. Davis. "A Generic Visualization Approach for
    Convolutional Neural Networks." ECCV 2020.

    Examples
    --------
    >>> import torch
    >>> from sklearn_caf import L2CAFExplainer
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4, 2))
    >>> images = torch.rand(2, 3, 8, 8).numpy()
    >>> maps = L2CAFExplainer(model=net, layer="1").fit_transform(images)
    >>> maps.shape
    (2, 8, 8)

    The Gaussian constraint: the maps are bumps, ``params`` their means (row, column).

    >>> gauss = L2CAFExplainer(model=net, layer="1", constraint="gaussian").fit(images)
    >>> e = gauss.explain(images)
    >>> e.maps.shape, e.params.shape
    ((2, 1, 8, 8), (2, 1, 2))
    """

    _parameter_constraints: dict = {
        **BaseExplainer._parameter_constraints,
        "objective": [StrOptions({"class-oblivious", "class-specific"})],
        "constraint": [StrOptions({"l2", "softmax", "gaussian"})],
        "variant": [StrOptions({"fast", "vanilla"})],
        "solver": [StrOptions({"auto", "exact", "adam", "lbfgs", "adam-lbfgs"})],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "check_every": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "final_learning_rate": [Interval(Real, 0, None, closed="left")],
        "init": [StrOptions({"ones", "uniform", "normal"}), np.ndarray],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        model: Any = None,
        layer: str | None = None,
        objective: str = "class-oblivious",
        constraint: str = "l2",
        top_k: int = 1,
        variant: str = "fast",
        solver: str = "auto",
        max_iter: int = 1000,
        tol: float = 1e-5,
        check_every: int = 50,
        learning_rate: float = 0.5,
        final_learning_rate: float = 1e-5,
        init: str | np.ndarray = "ones",
        output: Any = None,
        batch_size: int = 32,
        device: str = "auto",
        backend: Any = None,
        random_state: Any = None,
        verbose: int = 0,
        frame_axis: int | None = None,
        layout: str = "auto",
        grid: Any = None,
        prefix_tokens: int | None = None,
    ):
        self.model = model
        self.layer = layer
        self.objective = objective
        self.constraint = constraint
        self.top_k = top_k
        self.variant = variant
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.check_every = check_every
        self.learning_rate = learning_rate
        self.final_learning_rate = final_learning_rate
        self.init = init
        self.output = output
        self.batch_size = batch_size
        self.device = device
        self.backend = backend
        self.random_state = random_state
        self.verbose = verbose
        self.frame_axis = frame_axis
        self.layout = layout
        self.grid = grid
        self.prefix_tokens = prefix_tokens

    @property
    def explains_classes(self) -> bool:
        """True for ``objective="class-specific"``: one map per explained class."""
        return self.objective == "class-specific"

    def _whole_output_reason(self) -> str:
        return "objective='class-oblivious'"

    def _signed_maps(self) -> bool:
        return True

    def _schedule(self) -> AdamSchedule:
        return AdamSchedule(
            self.learning_rate, self.final_learning_rate, self.max_iter, self.tol, self.check_every
        )

    def _filter_problem(
        self,
        bound: Any,
        features: Any,
        context: tuple = (),
        target: Any = None,
        spatial: tuple[int, ...] | None = None,
        units: np.ndarray | None = None,
    ) -> _FilterProblem:
        """The problem on rows of ``features`` (the images for ``variant="vanilla"``);
        ``spatial``, the maps' shape, defaults to the feature maps' (fast variant).

        For clips, ``units`` are the rows' (clip, frame) units, ``features`` and
        ``context`` their clips' rows (:meth:`_unit_inputs`).
        """
        vanilla = self.variant == "vanilla"
        if spatial is None:
            spatial = self.filter_shape_ if vanilla else _filter_shape(bound, features)
        loss_fn, _ = self._solver_parts(bound, vanilla=vanilla, spatial=spatial)
        frames, context = loss_fn.frames, tuple(context)
        select, flags = None, tuple(False for _ in context)
        if frames.n_frames and units is not None:
            select = bound.asarray(frames.select(units, len(self.filter_shape_)))
            flags = frames.frame_level(context, len(units))
        return _FilterProblem(bound, loss_fn, features, context, target, select, flags)

    def _unit_inputs(self, bound: Any, a: Any, context: tuple, units: np.ndarray) -> tuple:
        """Head inputs of ``units`` (one per row): their clips' feature maps and context."""
        frames = self._frames()
        clips = frames.clips_of(units)
        flags = frames.frame_level(context, int(a.shape[0]) // frames.per_row)
        features = bound.take(a, frames.rows(clips))
        return features, frames.take_context(bound, context, flags, clips)

    def _unit_head(self, bound: Any, a: Any, context: tuple, units: np.ndarray, f: Any) -> Any:
        """The head's outputs with the raw filters ``f`` (one per unit in ``units``) on
        each unit's own frame (on each image, for images)."""
        frames = self._frames()
        features, ctx = self._unit_inputs(bound, a, context, units)
        select = frames.select(units, len(f.shape) - 1)
        mult = frames.multiplier(bound, f, None if select is None else bound.asarray(select))
        return bound.head(features * bound.expand_dims(mult, bound.channel_axis), ctx)

    def _solver_parts(
        self, bound: Any, vanilla: bool, spatial: tuple[int, ...] | None = None
    ) -> tuple[_FilterLoss, Any]:
        """The loss and the (compiled) Adam iterations, made once per configuration and bound
        model: a backend that compiles (``tf.function``) traces them once, not per batch.
        The Gaussian's loss holds its cell grid, so it is made once per map shape."""
        cache = self.__dict__.setdefault("_solver_cache", {})
        constraint = self.constraint
        frames = self._frames()
        key = (id(bound), self.objective, vanilla, frames.n_frames)
        if constraint != "l2":
            if constraint == "gaussian" and spatial is None:
                spatial = self.filter_shape_
            key += (constraint, tuple(spatial) if constraint == "gaussian" else None)
        if key not in cache:
            loss = _FilterLoss(bound, self.objective, vanilla, frames, constraint, spatial)
            cache[key] = (loss, compiled(bound, AdamSteps(bound, loss, self._schedule())))
        return cache[key]

    def _lbfgs_parts(self, bound: Any, vanilla: bool) -> Any:
        """The (compiled) loss-and-gradient of the L-BFGS solver, made once per
        configuration and bound model, like :meth:`_solver_parts`."""
        cache = self.__dict__.setdefault("_solver_cache", {})
        key = ("lbfgs", id(bound), self.objective, vanilla, self._frames().n_frames)
        if key not in cache:
            loss, _ = self._solver_parts(bound, vanilla)
            cache[key] = compiled(bound, ValueAndGrad(bound, loss))
        return cache[key]

    def _fit_bound(self, bound: Any, X: np.ndarray, a: Any, context: Any, out: Any) -> None:
        self._solver_cache = {}  # compiled steps belong to the previous bound model
        if self.frame_axis is not None and not hasattr(bound, "repeat"):
            raise ValueError(
                f"frame_axis={self.frame_axis} needs a backend whose bound models have the "
                f"optional repeat(x, repeats) op; {type(bound).__name__} has none."
            )
        spatial = _filter_shape(bound, a)
        self.filter_shape_ = spatial
        if self.constraint == "gaussian":
            if isinstance(self.init, np.ndarray) and self.init.shape != (len(spatial),):
                raise ValueError(
                    f"init must be 'ones', 'uniform', 'normal' or, with "
                    f"constraint='gaussian', the initial mean: an array of shape "
                    f"({len(spatial)},) (one coordinate per spatial axis of the maps "
                    f"{spatial}, in cells); got an array of shape {self.init.shape}."
                )
        elif isinstance(self.init, np.ndarray) and self.init.shape != spatial:
            raise ValueError(
                f"init must be 'ones', 'uniform', 'normal' or an array of the layer's spatial "
                f"shape {spatial}; got an array of shape {self.init.shape}."
            )
        if self.constraint != "l2":
            self._check_constraint_solver()
            self.solver_ = "adam"
            return
        if self.variant == "vanilla":
            if self.solver == "exact":
                raise ValueError(
                    "solver='exact' optimizes through the head only; it cannot be combined "
                    "with variant='vanilla'. Use solver='adam' or 'auto'."
                )
            self.solver_ = "adam-lbfgs" if self.solver == "auto" else self.solver
            return
        if self.solver in ("adam", "lbfgs", "adam-lbfgs"):
            self.solver_ = self.solver
            return
        outputs = self._probe(bound, a, context)
        jac, b, _ = _exact.fit_affine(outputs)
        residual = _effect_residual(outputs, jac, b)
        affine = bool(residual.max() <= _exact.AFFINE_RTOL)
        if self.solver == "exact" and not affine:
            raise ValueError(
                f"solver='exact' needs a head that is affine in the filter (global average "
                f"pooling then linear layers) after layer={self.layer_!r}; this one is not "
                f"(relative residual {residual.max():.2g}). Use solver='adam' or 'auto'."
            )
        self.solver_ = "exact" if affine else "adam-lbfgs"

    def _check_constraint_solver(self) -> None:
        if self.constraint != "l2" and self.solver in ("exact", "lbfgs", "adam-lbfgs"):
            raise ValueError(
                f"solver={self.solver!r} works on the unit sphere of constraint='l2' "
                f"only; constraint={self.constraint!r} is optimized with Adam. Use "
                f"solver='adam' or 'auto'."
            )

    def _solver_for_constraint(self) -> str:
        """The solver for this batch: ``solver_`` (chosen at fit), or Adam where the
        constraint was changed with ``set_params`` after fit to one that only Adam
        solves (the closed form and L-BFGS would return unit-norm filters)."""
        self._check_constraint_solver()
        return self.solver_ if self.constraint == "l2" else "adam"

    def _probe(self, bound: Any, a: Any, context: tuple) -> np.ndarray:
        """Head outputs (n, n_probes, d) at :func:`_exact.affine_probes`, one row per image
        (per frame of each clip, for clips: the probe filters that frame only)."""
        n = int(a.shape[0])
        spatial = _filter_shape(bound, a)
        probes = _exact.affine_probes(int(np.prod(spatial))).reshape(-1, *spatial)
        per_image = probes.shape[0]
        rows_per_eval = self._frames().per_row * int(np.prod(a.shape[1:]))
        chunk = max(1, _PROBE_BUDGET // rows_per_eval)
        rows = np.repeat(np.arange(n), per_image)
        filters = np.tile(probes, (n,) + (1,) * len(spatial))
        outputs = []
        for start in range(0, rows.size, chunk):
            sel = rows[start : start + chunk]
            f = bound.asarray(filters[start : start + chunk])
            out = self._unit_head(bound, a, context, sel, f)
            outputs.append(bound.to_numpy(out))
        return np.concatenate(outputs).reshape(n, per_image, -1)

    def _initial_filters(self, m: int, spatial: tuple, rng: np.random.RandomState) -> np.ndarray:
        """The starting parameters: filters ``(m, *spatial)``, or the Gaussian's means
        ``(m, N)``."""
        if self.constraint == "gaussian":
            size = np.asarray(spatial, dtype=np.float64)
            centre = (size - 1) / 2
            if isinstance(self.init, np.ndarray):
                if self.init.shape != (len(spatial),):
                    raise ValueError(
                        f"init must be the Gaussian's initial mean, an array of shape "
                        f"({len(spatial)},); got an array of shape {self.init.shape}."
                    )
                mu = np.broadcast_to(self.init.astype(np.float64), (m, len(spatial)))
            elif self.init == "uniform":
                mu = rng.uniform(0, 1, size=(m, len(spatial))) * (size - 1)
            elif self.init == "normal":
                mu = centre + rng.standard_normal((m, len(spatial)))
            else:
                mu = np.broadcast_to(centre, (m, len(spatial)))
            return np.array(mu, dtype=np.float32)
        shape = (m, *spatial)
        if isinstance(self.init, np.ndarray):
            if self.init.shape != spatial:
                raise ValueError(
                    f"init has shape {self.init.shape} but these images give feature maps of "
                    f"spatial shape {spatial}; give an init of that shape or images of the "
                    f"size seen in fit."
                )
            return np.broadcast_to(self.init.astype(np.float32), shape).copy()
        if self.init == "uniform":
            return rng.uniform(0, 1, size=shape).astype(np.float32)
        if self.init == "normal":
            return rng.standard_normal(shape).astype(np.float32)
        return np.ones(shape, dtype=np.float32)

    def _explain_batch(self, bound, x, a, context, out, targets, rng):
        # One problem per unit and target: a unit is an image, or a frame of a clip (its
        # row of ``a``), with its clip's output and targets.
        frames = self._frames()
        n_clips, n = int(out.shape[0]), int(a.shape[0])
        if frames.n_frames:
            clip_of = frames.clips_of(np.arange(n))
            out = bound.take(out, clip_of)
            targets = None if targets is None else targets[clip_of]
        k = 1 if targets is None else targets.shape[1]
        rows = np.repeat(np.arange(n), k)
        spatial = _filter_shape(bound, a)
        filters = np.empty((rows.size, *spatial), dtype=np.float32)
        gaussian = self.constraint == "gaussian"
        means = np.empty((rows.size, len(spatial)), dtype=np.float32) if gaussian else None
        stuck = np.zeros(rows.size, dtype=bool)  # rows whose start no restart revived
        n_iter = np.zeros(rows.size, dtype=np.int64)
        # The solver each filter comes from: what Explanation.solvers reports.
        solvers = np.empty(rows.size, dtype=_SOLVER_DTYPE)
        todo = np.arange(rows.size)
        dead = np.zeros(0, dtype=bool)
        solver = self._solver_for_constraint()
        if solver == "exact":
            solved, filters_exact = self._solve_exact(bound, a, context, out, rows, targets)
            filters[solved] = filters_exact[solved]
            solvers[solved] = "exact"
            todo = np.flatnonzero(~solved)
            # The rows the closed form could not take: the authors' Adam (below).
            solver = "adam"
            if todo.size and self.verbose:
                print(
                    f"L2-CAF at layer={self.layer!r}: {todo.size} of {rows.size} filter(s) "
                    f"failed the affine check of the closed form, optimized with Adam"
                )
        if solver == "adam-lbfgs" and self.max_iter <= _WARM_ITER[self.objective]:
            # No evaluation left for L-BFGS after the warm start: the authors' Adam alone,
            # with its stopping test (as minimize_rows_adam_lbfgs would run it).
            solver = "adam"
        if todo.size:
            solvers[todo] = solver
            sel = rows[todo]
            if self.objective == "class-oblivious":
                target = bound.take(out, sel)
            else:
                classes = targets.reshape(-1)[todo]
                target = bound.asarray(1 - 2 * _one_hot(classes, self.n_outputs_))
            if self.variant == "vanilla":
                clips = bound.take(x, frames.clips_of(sel))
                problem = self._filter_problem(
                    bound, clips, (), target, spatial=spatial, units=sel
                )
            else:
                features, ctx = self._unit_inputs(bound, a, context, sel)
                problem = self._filter_problem(
                    bound, features, ctx, target, spatial=spatial, units=sel
                )
            vanilla = self.variant == "vanilla"
            f0_np, dead = self._live_start(
                bound, problem, self._initial_filters(todo.size, spatial, rng), bound.take(a, sel)
            )
            stuck[todo] = dead
            options = LBFGSOptions(max_eval=self.max_iter, angle_tol=float(np.sqrt(self.tol)))
            if solver == "lbfgs":
                vg = self._lbfgs_parts(bound, vanilla)
                result = minimize_rows_lbfgs(bound, problem, f0_np, options, vg)
            elif solver == "adam-lbfgs":
                _, step = self._solver_parts(bound, vanilla, spatial)
                vg = self._lbfgs_parts(bound, vanilla)
                warm = replace(options, first_angle=_WARM_FIRST_ANGLE, max_angle=_WARM_MAX_ANGLE)
                result = minimize_rows_adam_lbfgs(
                    bound,
                    problem,
                    bound.asarray(f0_np),
                    self._schedule(),
                    _WARM_ITER[self.objective],
                    warm,
                    step,
                    vg,
                    settle=MapSettle(),
                )
            else:  # "adam", and the rows where the closed form's check failed
                _, step = self._solver_parts(bound, vanilla, spatial)
                f0 = bound.asarray(f0_np)
                result = minimize_rows(bound, problem, f0, self._schedule(), step=step)
            if self.constraint == "l2":
                filters[todo] = result.params
            else:  # the constrained filter itself, from the same function the loss used
                weights = problem.loss_fn.filters(bound.asarray(result.params))
                filters[todo] = bound.to_numpy(weights)
            if gaussian:
                means[todo] = result.params
            n_iter[todo] = result.n_iter
            if not result.converged.all():
                warnings.warn(
                    f"L2-CAF did not converge within max_iter={self.max_iter} iterations for "
                    f"{int((~result.converged).sum())} of {todo.size} filters; increase "
                    f"max_iter or tol.",
                    ConvergenceWarning,
                    stacklevel=caller_stacklevel(),
                )
        if self.constraint == "l2":
            axes = tuple(range(1, filters.ndim))
            filters /= np.sqrt((filters.astype(np.float64) ** 2).sum(axis=axes, keepdims=True))
            self._warn_constant(filters, n_dead=int(dead.sum()) if todo.size else 0)
        else:
            self._warn_constant(filters, n_dead=int(stuck.sum()), stuck=stuck)
        if frames.n_frames:  # units (clip, frame) x targets -> (clip, target, frame)
            shape = (n_clips, frames.n_frames, k)
            filters = np.swapaxes(filters.reshape(*shape, *spatial), 1, 2)
            n_iter = np.swapaxes(n_iter.reshape(shape), 1, 2)
            solvers = np.swapaxes(solvers.reshape(shape), 1, 2)
            if gaussian:
                means = np.swapaxes(means.reshape(*shape, -1), 1, 2)
        else:
            filters, n_iter = filters.reshape(n, k, *spatial), n_iter.reshape(n, k)
            solvers = solvers.reshape(n, k)
            if gaussian:
                means = means.reshape(n, k, -1)
        extras = {"solvers": solvers}
        if gaussian:
            extras["params"] = means
        return filters, n_iter, extras

    def _live_start(self, bound: Any, problem: _FilterProblem, f0: np.ndarray, a: Any):
        """Initial filters whose loss has a gradient, and which rows have none at all.

        A filter of unit norm spread over ``p`` cells scales every feature by about
        ``1 / sqrt(p)``; before a batch norm and a ReLU that can switch every unit of the
        head off, so the loss is flat at the start and gradient descent never moves (a
        dead start). Such a row restarts from the uniform filter on its ``r`` cells of
        largest feature norm (``a``: the layer's feature maps of the rows), which scales
        them by ``1 / sqrt(r)`` instead: ``r = p / 2, p / 4, ..., 1``, the largest ``r``
        whose loss has a gradient, i.e. the least change to the start that undoes the
        attenuation. One head evaluation per halving, for the dead rows only. Rows that
        no such start revives keep their start; :meth:`_warn_constant` reports them.
        """
        m = f0.shape[0]
        sphere = self.constraint == "l2"
        loss, grad = bound.value_and_grad(problem.loss, bound.asarray(f0))
        dead = _vanishing(bound.to_numpy(loss), bound.to_numpy(grad), f0, sphere)
        if not dead.any():
            return f0, dead
        rows = np.flatnonzero(dead)
        feats = bound.to_numpy(bound.take(a, rows)).astype(np.float64)
        axis = bound.channel_axis % feats.ndim
        norms = np.sqrt((feats**2).sum(axis=axis))
        spatial = norms.shape[1:]
        order = np.argsort(-norms.reshape(rows.size, -1), axis=1)
        sub = problem.take(rows)
        f0 = f0.copy()
        todo = np.arange(rows.size)  # dead rows (indices into ``rows``) not yet revived
        for restart in self._restarts(spatial):
            if not todo.size:
                break
            trial = restart(order[todo])
            part = sub if todo.size == rows.size else sub.take(todo)
            t_loss, t_grad = bound.value_and_grad(part.loss, bound.asarray(trial))
            live = ~_vanishing(bound.to_numpy(t_loss), bound.to_numpy(t_grad), trial, sphere)
            f0[rows[todo[live]]] = trial[live]
            todo = todo[~live]
        still = np.zeros(m, dtype=bool)
        still[rows[todo]] = True
        if self.verbose:
            print(
                f"L2-CAF at layer={self.layer_!r}: {rows.size} dead start(s), "
                f"{rows.size - todo.size} restarted on their strongest cells"
            )
        return f0, still

    def _restarts(self, spatial: tuple[int, ...]):
        """The starts :meth:`_live_start` tries, in order, for dead rows: functions of the
        rows' cells sorted by decreasing feature norm (``(rows, cells)`` flat indices)
        giving their starting parameters. ``"l2"``: the uniform filter on the ``r``
        strongest cells, ``r = cells / 2, ..., 1``; ``"softmax"``: logits 0 on those cells
        and ``-_SOFTMAX_OFF`` elsewhere (nearly the same weights); ``"gaussian"``: the mean
        on the strongest cell (its bump has no other size to try)."""
        if self.constraint == "gaussian":

            def on_strongest(order: np.ndarray) -> np.ndarray:
                cells = np.unravel_index(order[:, 0], spatial)
                return np.stack(cells, axis=1).astype(np.float32)

            yield on_strongest
            return
        p = int(np.prod(spatial))
        off = 0.0 if self.constraint == "l2" else -_SOFTMAX_OFF
        on = 1.0 if self.constraint == "l2" else 0.0
        r = p // 2
        while r >= 1:

            def uniform_on(order: np.ndarray, r: int = r) -> np.ndarray:
                trial = np.full((len(order), p), off, dtype=np.float32)
                np.put_along_axis(trial, order[:, :r], on, axis=1)
                return trial.reshape(-1, *spatial)

            yield uniform_on
            r //= 2

    def _warn_constant(
        self, filters: np.ndarray, n_dead: int, stuck: np.ndarray | None = None
    ) -> None:
        """Never return a uniform map silently, nor (``stuck``, rows whose loss had no
        gradient at any start) a map that never left its start: a Gaussian is never
        constant, but one that did not move sits where it started, not on the image."""
        flat = np.abs(filters.reshape(len(filters), -1))
        top = flat.max(axis=1)
        uniform = top - flat.min(axis=1) <= 1e-6 * top
        constant = int((uniform if stuck is None else uniform | stuck).sum())
        if not constant:
            return
        restarts = (
            "with the mean on their strongest cell"
            if self.constraint == "gaussian"
            else "on any number of their strongest cells"
        )
        why = (
            f"the loss has no gradient at the start of {n_dead} of them, nor "
            f"{restarts} (every unit of the head after the filter is switched "
            f"off, e.g. by a batch norm and a ReLU that the filter's attenuation pushes below "
            f"zero)"
            if n_dead
            else "the optimum found is uniform"
        )
        what = "constant map(s)" if stuck is None else "constant or unmoved map(s)"
        warnings.warn(
            f"L2-CAF at layer={self.layer_!r} returned {constant} {what} of "
            f"{len(filters)}: {why}. These maps say nothing about the image. Try a later "
            f"layer (e.g. the last feature map, after its activation), another start "
            f"(init='normal' with a random_state, or an init array), or "
            f"objective='class-specific'.",
            DeadFilterWarning,
            stacklevel=caller_stacklevel(),
        )

    def _solve_exact(self, bound, a, context, out, rows, targets):
        """Closed-form filters for the rows whose head is verified affine."""
        spatial = _filter_shape(bound, a)
        n_cells = int(np.prod(spatial))
        outputs = self._probe(bound, a, context)
        jac, b, _ = _exact.fit_affine(outputs)
        residual = _effect_residual(outputs, jac, b)
        jac_rows, b_rows = jac[rows], b[rows]
        if self.objective == "class-oblivious":
            target = bound.to_numpy(out).astype(np.float64) - b
            gram = np.einsum("ndp,ndq->npq", jac, jac)
            f = _exact.min_quadratic(gram, np.einsum("ndp,nd->np", jac, target))[rows]
        else:
            t = targets.reshape(-1)
            weights = jac_rows.sum(axis=1) - 2 * jac_rows[np.arange(rows.size), t]
            f = _exact.min_linear(weights)
        f = f.reshape(rows.size, *spatial).astype(np.float32)
        # Verify at the solution itself: a head affine at the probes but not here
        # (a ReLU that switches, say) falls back to gradient descent for that row.
        actual = bound.to_numpy(self._unit_head(bound, a, context, rows, bound.asarray(f)))
        # Against the filter's effect, as in _effect_residual.
        predicted = np.einsum("ndp,np->nd", jac_rows, f.reshape(rows.size, n_cells))
        actual = actual - b_rows
        # A head whose output does not depend on the filter at all (every unit after it
        # switched off) makes every filter optimal: such rows go to the iterative path,
        # which restarts or warns (see _live_start).
        flat = np.abs(jac_rows).max(axis=(1, 2)) <= _DEAD_RTOL * np.maximum(
            np.abs(b_rows).max(axis=1), 1e-30
        )
        ok = (
            (residual[rows] <= _exact.AFFINE_RTOL)
            & (_exact.relative_residual(predicted[:, None], actual[:, None]) <= _exact.AFFINE_RTOL)
            & ~flat
        )
        return ok, f
