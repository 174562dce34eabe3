"""Sanity checks for saliency maps: model-parameter randomization (Adebayo et al., 2018).

An explanation that does not change when the model's learned weights are replaced by
random ones does not explain the model. :func:`model_randomization` re-initializes the
model's weighted layers from the output down, on copies of the model, refits the explainer
on each copy and measures how similar each map stays to the map of the trained model.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats
from sklearn.base import clone
from sklearn.utils import Bunch, check_random_state

from ._utils import import_optional
from .backend import check_layer_names, get_backend

__all__ = ["SIMILARITY_COLUMNS", "model_randomization", "map_similarities"]

#: The similarity columns of :func:`model_randomization`'s frame, in order.
SIMILARITY_COLUMNS = ("spearman", "spearman_abs", "ssim", "hog")

#: The ``layer`` of the rows that randomize nothing.
ORIGINAL = "original"


def _import_skimage() -> tuple[Any, Any]:
    needed_by = "model_randomization (SSIM and HOG)"
    feature = import_optional("skimage.feature", needed_by=needed_by)
    metrics = import_optional("skimage.metrics", needed_by=needed_by)
    return metrics.structural_similarity, feature.hog


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant (no ranking to compare)."""
    a = a - a.mean()
    b = b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    if denominator <= 0 or not np.isfinite(denominator):
        return float("nan")
    return float(np.clip((a * b).sum() / denominator, -1.0, 1.0))


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return _correlation(stats.rankdata(a.ravel()), stats.rankdata(b.ravel()))


def _unit_range(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def _hog_cell(shape: tuple[int, ...]) -> int:
    # About eight cells across the shorter side (28-pixel cells at 224 px), at least 1.
    return max(1, min(shape) // 8)


def map_similarities(reference: np.ndarray, other: np.ndarray, *, maps: Any = None) -> dict:
    """The similarities of two saliency maps that :func:`model_randomization` reports.

    Parameters
    ----------
    reference, other : ndarray of shape (H, W)
        Heatmaps at the input's resolution (any range; each is min-max scaled to [0, 1]
        for SSIM and HOG).
    maps : tuple of two ndarrays, default=None
        The raw (signed) maps behind the heatmaps, for the Spearman correlations; ``None``
        uses the heatmaps themselves.

    Returns
    -------
    dict
        ``spearman``, ``spearman_abs``, ``ssim``, ``hog`` (floats; NaN where undefined, e.g.
        a rank correlation with a constant map).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.sanity import map_similarities
    >>> m = np.outer(np.hanning(16), np.hanning(16))
    >>> {k: round(v, 3) for k, v in map_similarities(m, m).items()}
    {'spearman': 1.0, 'spearman_abs': 1.0, 'ssim': 1.0, 'hog': 1.0}
    >>> round(map_similarities(m, m[::-1, ::-1].T)["spearman"], 3)  # symmetric bump
    1.0
    """
    structural_similarity, hog = _import_skimage()
    reference = np.asarray(reference, dtype=np.float64)
    other = np.asarray(other, dtype=np.float64)
    if reference.shape != other.shape or reference.ndim != 2:
        raise ValueError(
            f"reference and other must be 2-D maps of one shape; got {reference.shape} and "
            f"{other.shape}."
        )
    raw_a, raw_b = (reference, other) if maps is None else map(np.asarray, maps)
    a, b = _unit_range(reference), _unit_range(other)
    side = min(a.shape)
    if side >= 3:
        win = min(7, side if side % 2 else side - 1)
        ssim = float(structural_similarity(a, b, data_range=1.0, win_size=win))
    else:
        ssim = float("nan")
    cell = _hog_cell(a.shape)
    if side >= 2 * cell:
        options = dict(orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2))
        hog_similarity = _correlation(hog(a, **options), hog(b, **options))
    else:
        hog_similarity = float("nan")
    return {
        "spearman": _spearman(raw_a, raw_b),
        "spearman_abs": _spearman(np.abs(raw_a), np.abs(raw_b)),
        "ssim": ssim,
        "hog": hog_similarity,
    }


def _check_explainer(explainer: Any) -> Any:
    if not all(callable(getattr(explainer, m, None)) for m in ("get_params", "fit", "transform")):
        raise TypeError(
            "explainer must be a scikit-learn estimator with fit and transform and a `model` "
            f"parameter; got {type(explainer).__name__}."
        )
    params = explainer.get_params(deep=False)
    if "model" not in params:
        raise TypeError(
            f"explainer must have a `model` parameter to replace by randomized copies; "
            f"{type(explainer).__name__} has {sorted(params)}."
        )
    if params["model"] is None:
        raise ValueError("explainer has model=None; give it the trained model to check.")
    return params


def _as_maps(values: Any, n: int, what: str) -> np.ndarray:
    """(n, k, *spatial) float64 from an explainer's (n, H, W) or (n, k, H, W) output."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 3:
        values = values[:, np.newaxis]
    if values.ndim != 4 or values.shape[0] != n:
        raise ValueError(
            f"the explainer's {what} must have shape (n_images, H, W) or (n_images, k, H, W) "
            f"with n_images={n}; got {values.shape}. Only 2-D maps are compared."
        )
    return values


def _explain(estimator: Any, X: Any, targets: Any, n: int) -> tuple:
    """(raw maps, heatmaps, targets used) of a fitted ``estimator``."""
    if callable(getattr(estimator, "explain", None)):
        explanation = estimator.explain(X, targets)
        return (
            _as_maps(explanation.maps, n, "maps"),
            _as_maps(explanation.heatmaps, n, "heatmaps"),
            explanation.targets,
        )
    out = estimator.transform(X) if targets is None else estimator.transform(X, targets=targets)
    out = _as_maps(out, n, "output")
    return out, out, targets


def _steps(order: list[str], cascading: bool) -> list[tuple[str, list[str]]]:
    """(name of the last layer randomized, layers randomized) per step, from the top."""
    if cascading:
        return [(name, order[: i + 1]) for i, name in enumerate(order)]
    return [(name, [name]) for name in order]


def model_randomization(
    explainer: Any,
    X: Any,
    *,
    targets: Any = None,
    cascading: bool = True,
    layers: Sequence[str] | None = None,
    random_state: Any = None,
    return_maps: bool = False,
) -> Any:
    """The model-parameter randomization test of Adebayo et al. (NeurIPS 2018).

    The explainer is fitted on its trained model, then on copies of it whose weighted
    layers are re-initialized from the output down: cascading (the top layer, then the
    top two, ... down to every layer) or independently (one layer at a time). Each
    copy's maps are compared with the trained model's. A method whose maps stay similar
    while the weights turn random does not depend on what the model learned, and fails the
    check. The explainer and its model are never changed: every fit is on a
    :func:`~sklearn.base.clone` of the explainer, with ``model`` replaced by a copy made by
    the backend's ``randomized_copy``. See :doc:`/sanity`.

    Parameters
    ----------
    explainer : estimator
        Any scikit-learn estimator with a ``model`` parameter (a model of an installed
        backend), ``fit(X)`` and ``transform(X)`` returning maps of shape (n, H, W) or
        (n, k, H, W); fitted or not. Where it has ``explain`` (the sklearn-caf
        explainers), the raw maps it returns are used for the rank correlations.
    X : array-like of shape (n_images, ...)
        Images in the model's layout.
    targets : array-like of shape (n_images,) or (n_images, k), default=None
        Classes to explain, for class-specific explainers. ``None``: the classes the
        trained model predicts (its ``top_k``); the randomized models explain these same
        classes, not their own predictions.
    cascading : bool, default=True
        ``True``: step ``s`` randomizes the ``s`` top layers. ``False``: step ``s``
        randomizes only the ``s``-th layer from the top, the others keep their weights.
    layers : sequence of str, default=None
        The layers to randomize, names from the backend's ``weighted_layers(model)`` (every
        layer that owns learnable weights: convolutions, dense/linear, normalization, in
        forward order); ``None`` takes all of them. They are randomized from the output
        down whatever order they are given in.
    random_state : int, RandomState instance or None, default=None
        Seeds the random weights. A layer gets the same random weights in every step of
        one call (and of cascading and independent calls with the same int).
    return_maps : bool, default=False
        Also return the maps, for :func:`~sklearn_caf.plotting.plot_model_randomization`.

    Returns
    -------
    scores : pandas.DataFrame
        One row per image, explained target and step, sorted by them, with the columns

        - ``image``: the row of ``X``;
        - ``target``: the class explained (nullable integer; missing for class-oblivious
          maps or estimators without ``explain``), and ``rank``, its position 0..k-1
          among the image's targets;
        - ``step``: 0 for the original row, then 1, 2, ... from the top layer down;
        - ``layer``: the last layer randomized at this step (``"original"`` at step 0);
        - ``n_randomized``: how many layers are random at this step;
        - ``spearman``, ``spearman_abs``: Spearman rank correlation between the map and
          the trained model's map, of the raw maps and of their absolute values (for
          sklearn-caf explainers the raw maps are ``Explanation.maps`` at the layer's
          resolution: signed for L2-CAF; otherwise the transform output);
        - ``ssim``: structural similarity of the two heatmaps, each min-max scaled to
          [0, 1] (scikit-image, 7x7 windows);
        - ``hog``: Pearson correlation of the two heatmaps' histograms of oriented
          gradients (9 orientations, cells of ``min(H, W) // 8`` pixels, 2x2 blocks).

        Similarities are NaN where undefined (a rank correlation with a constant map, as a
        Grad-CAM map that a random model switches off entirely). Step 0 refits the
        explainer on an exact, unrandomized copy of the model: its similarities are 1 for
        a deterministic explainer and show the noise floor of a stochastic one.
        ``scores.attrs`` holds ``cascading`` and ``layers`` (the randomized layers from
        the top).
    maps : Bunch
        Only with ``return_maps=True``: ``heatmaps``, float array of shape
        (n_steps + 1, n_images, k, H, W), index 0 the trained model's heatmaps, then each
        step's; ``maps`` likewise for the raw maps; ``layer`` and ``step``, the step labels
        (as in ``scores``); ``targets``, the classes explained (n_images, k) or None;
        ``cascading``.

    Raises
    ------
    TypeError
        If ``explainer`` has no ``model`` parameter, or the model's backend cannot make
        randomized copies.
    ValueError
        If ``layers`` names layers that are not weighted layers of the model (the error
        lists them and the valid names).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sklearn_caf import GradCAMExplainer
    >>> from sklearn_caf.sanity import model_randomization
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(
    ...     torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
    ...     torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.ReLU(),
    ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(6, 3)).eval()
    >>> X = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    >>> scores = model_randomization(GradCAMExplainer(model=net, layer="3"), X,
    ...                              random_state=0)
    >>> scores[["image", "step", "layer", "n_randomized"]].head(4)
       image  step     layer  n_randomized
    0      0     0  original             0
    1      0     1         6             1
    2      0     2         2             2
    3      0     3         0             3
    """
    params = _check_explainer(explainer)
    pd = import_optional("pandas", needed_by="model_randomization (a DataFrame)")
    _import_skimage()  # fail before the first fit, not after
    model = params["model"]
    backend = get_backend(model, params.get("backend"))
    missing = [m for m in ("weighted_layers", "randomized_copy") if not hasattr(backend, m)]
    if missing:
        raise TypeError(
            f"the {backend.name} backend cannot make randomized copies of a model: it lacks "
            f"{', '.join(missing)} (see sklearn_caf.backend.Backend)."
        )
    if not isinstance(cascading, (bool, np.bool_)):
        raise TypeError(f"cascading must be a bool; got {cascading!r}.")
    valid = list(backend.weighted_layers(model))
    if layers is None:
        chosen = valid
    else:
        given = check_layer_names(layers, valid)
        chosen = [name for name in valid if name in set(given)]
    if not chosen:
        raise ValueError("the model has no weighted layers to randomize.")
    order = chosen[::-1]  # from the output down
    seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))

    n = len(X)
    reference = clone(explainer).fit(X)
    ref_maps, ref_heatmaps, used_targets = _explain(reference, X, targets, n)
    del reference

    def run(randomized: list[str]) -> tuple[np.ndarray, np.ndarray]:
        copy = backend.randomized_copy(model, randomized, seed)
        estimator = clone(explainer).set_params(model=copy).fit(X)
        maps, heatmaps, _ = _explain(estimator, X, used_targets, n)
        if heatmaps.shape != ref_heatmaps.shape or maps.shape != ref_maps.shape:
            raise ValueError(
                f"the explainer's maps on the randomized model have shape {heatmaps.shape}, "
                f"on the trained model {ref_heatmaps.shape}."
            )
        return maps, heatmaps

    labels = [(0, ORIGINAL, [])] + [
        (i + 1, name, randomized) for i, (name, randomized) in enumerate(_steps(order, cascading))
    ]
    # Kept only when asked for: every step's maps of every image add up on a large network.
    kept: list[tuple[np.ndarray, np.ndarray]] = []
    if return_maps:
        kept.append((ref_maps.astype(np.float32), ref_heatmaps.astype(np.float32)))
    rows = []
    k = ref_heatmaps.shape[1]
    target_values = None if used_targets is None else np.asarray(used_targets).reshape(n, -1)
    for step, name, randomized in labels:
        maps, heatmaps = run(randomized)
        if step and return_maps:
            kept.append((maps.astype(np.float32), heatmaps.astype(np.float32)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for i in range(n):
                for j in range(k):
                    similarity = map_similarities(
                        ref_heatmaps[i, j], heatmaps[i, j], maps=(ref_maps[i, j], maps[i, j])
                    )
                    rows.append(
                        {
                            "image": i,
                            "target": None if target_values is None else target_values[i, j],
                            "rank": j,
                            "step": step,
                            "layer": name,
                            "n_randomized": len(randomized),
                            **similarity,
                        }
                    )
    scores = pd.DataFrame(rows)
    scores["target"] = scores["target"].astype("Int64")
    scores = scores.sort_values(["image", "rank", "step"], kind="stable", ignore_index=True)
    scores.attrs.update(cascading=bool(cascading), layers=list(order))
    if not return_maps:
        return scores
    return scores, Bunch(
        heatmaps=np.stack([h for _, h in kept]),
        maps=np.stack([m for m, _ in kept]),
        layer=[label[1] for label in labels],
        step=np.array([label[0] for label in labels]),
        targets=target_values,
        cascading=bool(cascading),
    )
