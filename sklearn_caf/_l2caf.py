"""L2-CAF: the unit-L2-norm constrained attention filter (Taha et al., ECCV 2020 workshops)."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, replace
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions

from . import _sphere
from ._adam import AdamSchedule, AdamSteps, compiled, minimize_rows
from ._adam_lbfgs import minimize_rows_adam_lbfgs
from ._base import BaseExplainer, _spatial_axes
from ._lbfgs import LBFGSOptions, ValueAndGrad, minimize_rows_lbfgs

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

# Head evaluations per call while probing a head (elements of the filtered feature maps).
_PROBE_BUDGET = 2**24

# A start is dead when the loss changes by less than this fraction of itself per radian of
# rotation of the filter: in float32 a live gradient is many orders of magnitude above it,
# and a dead one (every unit after the filter switched off) is exactly zero.
_DEAD_RTOL = 1e-7


class DeadFilterWarning(UserWarning):
    """An L2-CAF filter could not move from its start: its map is uniform, not a result.

    Raised when the loss has no gradient at the initial filter (typically every unit of
    the head is switched off by the attenuation a unit-norm filter applies, as before a
    batch norm and a ReLU) and no one-cell start revives it, or when a map comes out
    constant for any other reason.
    """


def _filter_shape(bound: Any, a: Any) -> tuple[int, ...]:
    return tuple(int(a.shape[ax]) for ax in _spatial_axes(len(a.shape), bound.channel_axis))


def _caller_stacklevel() -> int:
    """Stack level of the first frame outside sklearn-caf and scikit-learn, for warnings."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in (
        "sklearn_caf",
        "sklearn",
    ):
        frame, level = frame.f_back, level + 1
    return level


def _vanishing(loss: np.ndarray, grad: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Rows whose loss does not change to first order as the filter turns on the sphere."""
    m = len(f)
    f, grad = f.reshape(m, -1).astype(np.float64), grad.reshape(m, -1).astype(np.float64)
    norm = np.linalg.norm(f, axis=1)
    unit = f / np.maximum(norm, 1e-300)[:, None]
    tangent = grad - (grad * unit).sum(axis=1, keepdims=True) * unit
    slope = np.linalg.norm(tangent, axis=1) * norm  # loss change per radian
    return slope <= _DEAD_RTOL * np.maximum(np.abs(loss.astype(np.float64)), 1e-30)


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[labels]


class _FilterLoss:
    """The per-row L2-CAF loss as a pure function of explicit tensors.

    ``loss(f, features, context, target)``: ``features`` are the layer's feature maps
    (fast variant) or the images (vanilla), ``target`` the unfiltered outputs
    (class-oblivious) or the class weights ``1 - 2 [j == c]`` (class-specific). One object
    per explainer configuration, so that a backend compiles it once for all batches.
    """

    def __init__(self, bound: Any, objective: str, vanilla: bool):
        self.bound, self.objective, self.vanilla = bound, objective, vanilla

    def outputs(self, f: Any, features: Any, context: tuple) -> Any:
        bound = self.bound
        if self.vanilla:  # the whole network, every iteration
            a, context = bound.trunk(features)
        else:
            a = features
        axes = tuple(range(1, len(f.shape)))
        unit = f / bound.sqrt(bound.sum(f * f, axis=axes, keepdims=True))
        return bound.head(a * bound.expand_dims(unit, bound.channel_axis), context)

    def __call__(self, f: Any, features: Any, context: tuple, target: Any) -> Any:
        out = self.outputs(f, features, context)
        bound = self.bound
        if self.objective == "class-oblivious":
            diff = out - target
            return bound.mean(diff * diff, axis=1)
        # Eq. 2, sum_{j != c} z_j - z_c, as one weighted sum: weights 1 - 2 [j == c].
        return bound.sum(out * target, axis=1)


@dataclass
class _FilterProblem:
    """The L2-CAF losses of a batch of filters, one row per (image, target)."""

    bound: Any
    loss_fn: _FilterLoss
    features: Any  # the layer's feature maps (fast) or the images (vanilla), one per row
    context: tuple = ()
    target: Any = None  # unfiltered outputs (class-oblivious) or class weights (specific)

    @property
    def args(self) -> tuple:
        return self.features, self.context, self.target

    def take(self, keep: np.ndarray) -> _FilterProblem:
        take = self.bound.take
        return replace(
            self,
            features=take(self.features, keep),
            context=tuple(take(c, keep) for c in self.context),
            target=None if self.target is None else take(self.target, keep),
        )

    def outputs(self, f: Any) -> Any:
        return self.loss_fn.outputs(f, self.features, self.context)

    def loss(self, f: Any) -> Any:
        return self.loss_fn(f, *self.args)


class L2CAFExplainer(BaseExplainer):
    """Attention maps by the unit-L2-norm constrained attention filter (L2-CAF).

    A spatial filter ``f`` of unit L2 norm multiplies the feature maps of ``layer``; it is
    optimized so that the filtered output matches the unfiltered one (class-oblivious,
    Eq. 1 of the paper) or favours one class over all others (class-specific, Eq. 2). The
    heatmap is ``|f|``, resized to the input and scaled to [0, 1]. Works for
    classification networks (logits) and retrieval networks (raw embeddings).

    Parameters
    ----------
    model : object
        A PyTorch ``nn.Module`` or a Keras model (any framework with an installed
        backend). Never modified: weights, mode and gradient flags are as before.
    layer : str or None, default=None
        The layer whose output is filtered: a dotted module path (``"layer4"``,
        ``"features.28"``). ``None`` filters the input itself, for pre-extracted
        feature maps.
    objective : {"class-oblivious", "class-specific"}, default="class-oblivious"
        Eq. 1 (one map per image, for classification or retrieval) or Eq. 2 (one map
        per explained class; logits only).
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
        first iterations (150 for the class-oblivious objective, 100 for the
        class-specific one: exactly those of ``"adam"``, which choose the optimum's
        basin), then L-BFGS with short first steps down to the bottom of that basin:
        the optimum of 1000 Adam iterations (map correlation >= 0.99 on every image)
        with fewer head evaluations and a bounded count (on EfficientNet-Lite0's
        ``_blocks.10``: 105 class-specific, 31x Grad-CAM, against Adam's 151-301 and
        67x; 155-156 class-oblivious against 151-401). ``"auto"`` uses ``"exact"``
        where the check passes, else ``"adam-lbfgs"``.
    max_iter : int, default=1000
        Maximum Adam iterations, or L-BFGS head evaluations, per filter (for
        ``"adam-lbfgs"``, both together).
    tol : float, default=1e-5
        Convergence. Adam: stop a filter when its loss changed by less than
        ``tol * max(1, |loss|)`` over ``check_every`` iterations (paper: 1e-5, d = 50).
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
    init : {"ones", "uniform", "normal"} or ndarray, default="ones"
        Initial filter: all ones (the authors' PyTorch code; deterministic, so a batch
        gives the same maps as its images one by one), U[0, 1] (the paper), N(0, 1) (the
        authors' TensorFlow code), or an array of the layer's spatial shape. A start
        where the loss has no gradient (a *dead start*: the unit-norm filter attenuates
        the features by about ``1 / sqrt(cells)``, which can switch off every unit of a
        head with a batch norm and a ReLU) restarts from the uniform filter on the
        image's ``r`` strongest cells (largest feature norm), ``r = cells / 2, cells / 4,
        ..., 1``, the largest ``r`` with a gradient. Where none has one, the map is
        uniform and a :class:`DeadFilterWarning` names the layer; no constant map is
        returned without it.
    output : None, int, str or callable, default=None
        Which model output to explain when the model returns a tuple (index), a dict
        (key), or anything else (a callable mapping it to an (n, d) tensor).
    batch_size : int, default=32
    device : str, default="auto"
        ``"auto"`` uses a GPU when present; or ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    backend : str, Backend or None, default=None
        Force a backend; ``None`` detects it from the model.
    random_state : int, RandomState instance or None, default=None
        Seeds the ``"uniform"`` and ``"normal"`` initial filters.
    verbose : int, default=0

    Attributes
    ----------
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
        The solver used for this model and layer.
    split_ : str or None
        How the backend split the model at ``layer``: PyTorch ``"fx"``, ``"export"`` or
        ``"hooks"`` (see the Backends page), Keras ``"graph"`` or ``"intercept"``;
        ``"input"`` for ``layer=None``.

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
    """

    _parameter_constraints: dict = {
        **BaseExplainer._parameter_constraints,
        "objective": [StrOptions({"class-oblivious", "class-specific"})],
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
    ):
        self.model = model
        self.layer = layer
        self.objective = objective
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

    def _uses_targets(self) -> bool:
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
        self, bound: Any, features: Any, context: tuple = (), target: Any = None
    ) -> _FilterProblem:
        """The problem on rows of ``features`` (the images for ``variant="vanilla"``)."""
        loss_fn, _ = self._solver_parts(bound, vanilla=self.variant == "vanilla")
        return _FilterProblem(bound, loss_fn, features, tuple(context), target)

    def _solver_parts(self, bound: Any, vanilla: bool) -> tuple[_FilterLoss, Any]:
        """The loss and the (compiled) Adam iterations, made once per configuration and bound
        model: a backend that compiles (``tf.function``) traces them once, not per batch."""
        cache = self.__dict__.setdefault("_solver_cache", {})
        key = (id(bound), self.objective, vanilla)
        if key not in cache:
            loss = _FilterLoss(bound, self.objective, vanilla)
            cache[key] = (loss, compiled(bound, AdamSteps(bound, loss, self._schedule())))
        return cache[key]

    def _lbfgs_parts(self, bound: Any, vanilla: bool) -> Any:
        """The (compiled) loss-and-gradient of the L-BFGS solver, made once per
        configuration and bound model, like :meth:`_solver_parts`."""
        cache = self.__dict__.setdefault("_solver_cache", {})
        key = ("lbfgs", id(bound), self.objective, vanilla)
        if key not in cache:
            loss, _ = self._solver_parts(bound, vanilla)
            cache[key] = compiled(bound, ValueAndGrad(bound, loss))
        return cache[key]

    def _fit_bound(self, bound: Any, X: np.ndarray, a: Any, context: Any, out: Any) -> None:
        self._solver_cache = {}  # compiled steps belong to the previous bound model
        spatial = _filter_shape(bound, a)
        self.filter_shape_ = spatial
        if isinstance(self.init, np.ndarray) and self.init.shape != spatial:
            raise ValueError(
                f"init must be 'ones', 'uniform', 'normal' or an array of the layer's spatial "
                f"shape {spatial}; got an array of shape {self.init.shape}."
            )
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
        *_, residual = _sphere.fit_affine(outputs)
        affine = bool(residual.max() <= _sphere.AFFINE_RTOL)
        if self.solver == "exact" and not affine:
            raise ValueError(
                f"solver='exact' needs a head that is affine in the filter (global average "
                f"pooling then linear layers) after layer={self.layer!r}; this one is not "
                f"(relative residual {residual.max():.2g}). Use solver='adam' or 'auto'."
            )
        self.solver_ = "exact" if affine else "adam-lbfgs"

    def _probe(self, bound: Any, a: Any, context: tuple) -> np.ndarray:
        """Head outputs (n, n_probes, d) at :func:`_sphere.affine_probes`."""
        n = int(a.shape[0])
        spatial = _filter_shape(bound, a)
        probes = _sphere.affine_probes(int(np.prod(spatial))).reshape(-1, *spatial)
        per_image = probes.shape[0]
        chunk = max(1, _PROBE_BUDGET // int(np.prod(a.shape[1:])))
        rows = np.repeat(np.arange(n), per_image)
        filters = np.tile(probes, (n,) + (1,) * len(spatial))
        outputs = []
        for start in range(0, rows.size, chunk):
            sel = rows[start : start + chunk]
            f = bound.asarray(filters[start : start + chunk])
            a_rows = bound.take(a, sel)
            ctx = tuple(bound.take(c, sel) for c in context)
            out = bound.head(a_rows * bound.expand_dims(f, bound.channel_axis), ctx)
            outputs.append(bound.to_numpy(out))
        return np.concatenate(outputs).reshape(n, per_image, -1)

    def _initial_filters(self, m: int, spatial: tuple, rng: np.random.RandomState) -> np.ndarray:
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
        n = int(a.shape[0])
        k = 1 if targets is None else targets.shape[1]
        rows = np.repeat(np.arange(n), k)
        spatial = _filter_shape(bound, a)
        filters = np.empty((rows.size, *spatial), dtype=np.float32)
        n_iter = np.zeros(rows.size, dtype=np.int64)
        todo = np.arange(rows.size)
        dead = np.zeros(0, dtype=bool)
        if self.solver_ == "exact":
            solved, filters_exact = self._solve_exact(bound, a, context, out, rows, targets)
            filters[solved] = filters_exact[solved]
            todo = np.flatnonzero(~solved)
        if todo.size:
            sel = rows[todo]
            if self.objective == "class-oblivious":
                target = bound.take(out, sel)
            else:
                classes = targets.reshape(-1)[todo]
                target = bound.asarray(1 - 2 * _one_hot(classes, self.n_outputs_))
            if self.variant == "vanilla":
                problem = self._filter_problem(bound, bound.take(x, sel), (), target)
            else:
                ctx = tuple(bound.take(c, sel) for c in context)
                problem = self._filter_problem(bound, bound.take(a, sel), ctx, target)
            vanilla = self.variant == "vanilla"
            f0_np, dead = self._live_start(
                bound, problem, self._initial_filters(todo.size, spatial, rng), bound.take(a, sel)
            )
            options = LBFGSOptions(max_eval=self.max_iter, angle_tol=float(np.sqrt(self.tol)))
            if self.solver_ == "lbfgs":
                vg = self._lbfgs_parts(bound, vanilla)
                result = minimize_rows_lbfgs(bound, problem, f0_np, options, vg)
            elif self.solver_ == "adam-lbfgs":
                _, step = self._solver_parts(bound, vanilla)
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
                )
            else:  # "adam", and the rows where the exact solver's check failed
                _, step = self._solver_parts(bound, vanilla)
                f0 = bound.asarray(f0_np)
                result = minimize_rows(bound, problem, f0, self._schedule(), step=step)
            filters[todo] = result.params
            n_iter[todo] = result.n_iter
            if not result.converged.all():
                warnings.warn(
                    f"L2-CAF did not converge within max_iter={self.max_iter} iterations for "
                    f"{int((~result.converged).sum())} of {todo.size} filters; increase "
                    f"max_iter or tol.",
                    ConvergenceWarning,
                    stacklevel=_caller_stacklevel(),
                )
        axes = tuple(range(1, filters.ndim))
        filters /= np.sqrt((filters.astype(np.float64) ** 2).sum(axis=axes, keepdims=True))
        self._warn_constant(filters, n_dead=int(dead.sum()) if todo.size else 0)
        return filters.reshape(n, k, *spatial), n_iter.reshape(n, k)

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
        m, spatial = f0.shape[0], f0.shape[1:]
        p = int(np.prod(spatial))
        loss, grad = bound.value_and_grad(problem.loss, bound.asarray(f0))
        dead = _vanishing(bound.to_numpy(loss), bound.to_numpy(grad), f0)
        if not dead.any():
            return f0, dead
        rows = np.flatnonzero(dead)
        feats = bound.to_numpy(bound.take(a, rows)).astype(np.float64)
        axis = bound.channel_axis % feats.ndim
        order = np.argsort(-np.sqrt((feats**2).sum(axis=axis)).reshape(rows.size, p), axis=1)
        sub = problem.take(rows)
        f0 = f0.reshape(m, p).copy()
        todo = np.arange(rows.size)  # dead rows (indices into ``rows``) not yet revived
        r = p // 2
        while todo.size and r >= 1:
            trial = np.zeros((todo.size, p), dtype=np.float32)
            np.put_along_axis(trial, order[todo, :r], 1.0, axis=1)
            part = sub if todo.size == rows.size else sub.take(todo)
            t_loss, t_grad = bound.value_and_grad(
                part.loss, bound.asarray(trial.reshape(-1, *spatial))
            )
            live = ~_vanishing(bound.to_numpy(t_loss), bound.to_numpy(t_grad), trial)
            f0[rows[todo[live]]] = trial[live]
            todo, r = todo[~live], r // 2
        still = np.zeros(m, dtype=bool)
        still[rows[todo]] = True
        if self.verbose:
            print(
                f"L2-CAF at layer={self.layer!r}: {rows.size} dead start(s), "
                f"{rows.size - todo.size} restarted on their strongest cells"
            )
        return f0.reshape(m, *spatial), still

    def _warn_constant(self, filters: np.ndarray, n_dead: int) -> None:
        """Never return a uniform map silently."""
        flat = np.abs(filters.reshape(len(filters), -1))
        top = flat.max(axis=1)
        constant = int((top - flat.min(axis=1) <= 1e-6 * top).sum())
        if not constant:
            return
        why = (
            f"the loss has no gradient at the start of {n_dead} of them, nor on any number "
            f"of their strongest cells (every unit of the head after the filter is switched "
            f"off, e.g. by a batch norm and a ReLU that the filter's attenuation pushes below "
            f"zero)"
            if n_dead
            else "the optimum found is uniform"
        )
        warnings.warn(
            f"L2-CAF at layer={self.layer!r} returned {constant} constant map(s) of "
            f"{len(filters)}: {why}. These maps say nothing about the image. Try a later "
            f"layer (e.g. the last feature map, after its activation), another start "
            f"(init='normal' with a random_state, or an init array), or "
            f"objective='class-specific'.",
            DeadFilterWarning,
            stacklevel=_caller_stacklevel(),
        )

    def _solve_exact(self, bound, a, context, out, rows, targets):
        """Closed-form filters for the rows whose head is verified affine."""
        spatial = _filter_shape(bound, a)
        n_cells = int(np.prod(spatial))
        jac, b, residual = _sphere.fit_affine(self._probe(bound, a, context))
        jac_rows, b_rows = jac[rows], b[rows]
        if self.objective == "class-oblivious":
            target = bound.to_numpy(out).astype(np.float64) - b
            gram = np.einsum("ndp,ndq->npq", jac, jac)
            f = _sphere.min_quadratic(gram, np.einsum("ndp,nd->np", jac, target))[rows]
        else:
            t = targets.reshape(-1)
            weights = jac_rows.sum(axis=1) - 2 * jac_rows[np.arange(rows.size), t]
            f = _sphere.min_linear(weights)
        f = f.reshape(rows.size, *spatial).astype(np.float32)
        # Verify at the solution itself: a head affine at the probes but not here
        # (a ReLU that switches, say) falls back to gradient descent for that row.
        unit = bound.asarray(f)
        a_rows = bound.take(a, rows)
        ctx = tuple(bound.take(c, rows) for c in context)
        actual = bound.to_numpy(
            bound.head(a_rows * bound.expand_dims(unit, bound.channel_axis), ctx)
        )
        predicted = np.einsum("ndp,np->nd", jac_rows, f.reshape(rows.size, n_cells)) + b_rows
        # A head whose output does not depend on the filter at all (every unit after it
        # switched off) makes every filter optimal: such rows go to the iterative path,
        # which restarts or warns (see _live_start).
        flat = np.abs(jac_rows).max(axis=(1, 2)) <= _DEAD_RTOL * np.maximum(
            np.abs(b_rows).max(axis=1), 1e-30
        )
        ok = (
            (residual[rows] <= _sphere.AFFINE_RTOL)
            & (
                _sphere.relative_residual(predicted[:, None], actual[:, None])
                <= _sphere.AFFINE_RTOL
            )
            & ~flat
        )
        return ok, f
