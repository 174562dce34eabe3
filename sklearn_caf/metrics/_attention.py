"""How focused attention maps are: BR-NPA's sparsity."""

import numpy as np

from .._utils import validate_params


@validate_params(
    {"maps": ["array-like"], "feature_norms": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
def attention_sparsity(maps, feature_norms=None) -> np.ndarray:
    """How focused attention maps are: the peak of the norm-weighted mean map over its mean.

    The sparsity of BR-NPA's paper (Section 4.3): the parts' maps are averaged, each position
    is multiplied by the norm of its feature vector, and the sparsity is ``max / mean`` of
    the result. It is 1 for a uniform map and ``h * w`` for a map on a single position;
    higher is more focused.

    Parameters
    ----------
    maps : array-like of shape (n_images, n_parts, \\*spatial)
        Non-negative attention maps (``BRNPAPooling.explain(X).maps``). A single map per
        image may be given as (n_images, 1, \\*spatial).
    feature_norms : array-like of shape (n_images, \\*spatial), default=None
        Norm of the feature vector at each position (``BRNPAParts.feature_norms``);
        ``None`` weights every position equally.

    Returns
    -------
    sparsity : ndarray of shape (n_images,)
        ``max / mean`` per image, >= 1; NaN where the weighted map is all zero.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.metrics import attention_sparsity
    >>> maps = np.zeros((2, 1, 2, 2))
    >>> maps[0, 0] = 0.25          # uniform
    >>> maps[1, 0, 0, 0] = 1.0     # one position
    >>> attention_sparsity(maps)
    array([1., 4.])
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim < 3:
        raise ValueError(
            f"maps must have shape (n_images, n_parts, *spatial); got shape {maps.shape}."
        )
    if not np.isfinite(maps).all() or (maps < 0).any():
        raise ValueError("maps must hold finite, non-negative values.")
    mean_map = maps.mean(axis=1)
    if feature_norms is not None:
        norms = np.asarray(feature_norms, dtype=np.float64)
        if norms.shape != mean_map.shape:
            raise ValueError(
                f"feature_norms must have shape (n_images, *spatial) = {mean_map.shape}; got "
                f"{norms.shape}."
            )
        if not np.isfinite(norms).all() or (norms < 0).any():
            raise ValueError("feature_norms must hold finite, non-negative values.")
        mean_map = mean_map * norms
    flat = mean_map.reshape(mean_map.shape[0], -1)
    mean = flat.mean(axis=1)
    return np.divide(flat.max(axis=1), mean, out=np.full_like(mean, np.nan), where=mean > 0)
