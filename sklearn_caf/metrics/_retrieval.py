"""Retrieval metrics of embeddings: Recall@k and the NMI of a k-means clustering."""

from numbers import Integral

import numpy as np

from .._utils import Interval, StrOptions, validate_params

# Distances held at once by recall_at_k (32 MiB of float64).
_RECALL_BLOCK_ELEMENTS = 2**22


def _check_embeddings(embeddings, labels, *, normalize):
    embeddings = np.asarray(embeddings)
    if embeddings.dtype.kind not in "biuf":
        raise ValueError(
            f"embeddings must hold real numbers; got an array of dtype {embeddings.dtype}."
        )
    if embeddings.ndim != 2 or embeddings.shape[0] < 2 or embeddings.shape[1] < 1:
        raise ValueError(
            "embeddings must be a 2-D array of shape (n_samples, n_features) with at least "
            f"2 samples; got shape {embeddings.shape}."
        )
    embeddings = embeddings.astype(np.float64, copy=False)
    if not np.isfinite(embeddings).all():
        raise ValueError("embeddings contains NaN or infinite values.")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(embeddings):
        raise ValueError(
            f"labels must be 1-D with one label per embedding ({len(embeddings)}); got shape "
            f"{labels.shape}."
        )
    if normalize:
        norms = np.linalg.norm(embeddings, axis=1)
        if (norms == 0).any():
            raise ValueError(
                f"embeddings has a zero vector (row {np.argmin(norms)}); cosine similarity "
                "and L2 normalization are undefined for it."
            )
        embeddings = embeddings / norms[:, np.newaxis]
    return embeddings, labels


@validate_params(
    {
        "embeddings": ["array-like"],
        "labels": ["array-like"],
        "k": [Interval(Integral, 1, None, closed="left"), "array-like"],
        "metric": [StrOptions({"cosine", "euclidean"})],
    },
    prefer_skip_nested_validation=True,
)
def recall_at_k(embeddings, labels, k=1, metric: str = "cosine") -> float | dict[int, float]:
    """Recall@k of retrieval: how often one of a query's k nearest neighbours shares its label.

    Every sample is a query against all the others (the query itself is excluded from its
    own neighbours). A query counts as a hit when at least one of its `k` nearest neighbours
    has its label; Recall@k is the fraction of hits (Recall@1 is the nearest neighbour's
    accuracy). Neighbours at equal computed distances are ranked by index (a stable sort),
    so the result is deterministic. Queries are processed in blocks, so memory stays at a
    few blocks of ``n_samples`` distances.

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, n_features)
        One embedding per sample (at least 2 samples).
    labels : array-like of shape (n_samples,)
        Class of each sample.
    k : int or sequence of int, default=1
        Number of neighbours, from 1 to ``n_samples - 1``; several values give several
        recalls from one ranking.
    metric : {"cosine", "euclidean"}, default="cosine"
        Cosine distance (1 - cosine similarity; zero vectors are an error) or Euclidean
        distance.

    Returns
    -------
    recall : float or dict of int to float
        A float for an int `k`; for a sequence, a dict mapping each ``k`` to its recall.

    Examples
    --------
    >>> from sklearn_caf.metrics import recall_at_k
    >>> embeddings = [[0.0], [0.1], [1.0], [1.2], [5.0]]
    >>> labels = [0, 0, 1, 0, 1]
    >>> recall_at_k(embeddings, labels, k=1, metric="euclidean")
    0.4
    >>> recall_at_k(embeddings, labels, k=[1, 2], metric="euclidean")
    {1: 0.4, 2: 0.8}
    """
    single = isinstance(k, Integral)
    ks = np.atleast_1d(np.asarray(k))
    if ks.ndim != 1 or len(ks) == 0 or ks.dtype.kind not in "iu":
        raise ValueError(f"k must be an int or a non-empty sequence of ints; got {k!r}.")
    embeddings, labels = _check_embeddings(embeddings, labels, normalize=metric == "cosine")
    n = len(embeddings)
    if ks.min() < 1 or ks.max() > n - 1:
        raise ValueError(
            f"k must be between 1 and n_samples - 1 = {n - 1} (the query is not its own "
            f"neighbour); got {k!r}."
        )
    k_max = int(ks.max())
    squared = (embeddings**2).sum(axis=1)
    hits = np.zeros((len(ks), n), dtype=bool)
    block = max(1, min(n, _RECALL_BLOCK_ELEMENTS // n))
    for start in range(0, n, block):
        stop = min(start + block, n)
        queries = np.arange(start, stop)
        products = embeddings[start:stop] @ embeddings.T
        if metric == "cosine":
            distances = 1.0 - products
        else:
            distances = squared[start:stop, np.newaxis] - 2.0 * products + squared
        distances[np.arange(stop - start), queries] = np.inf
        neighbours = np.argsort(distances, axis=1, kind="stable")[:, :k_max]
        found = np.logical_or.accumulate(labels[neighbours] == labels[queries, np.newaxis], axis=1)
        hits[:, start:stop] = found[:, ks - 1].T
    recalls = hits.mean(axis=1)
    if single:
        return float(recalls[0])
    return {int(kk): float(r) for kk, r in zip(ks, recalls, strict=True)}


@validate_params(
    {
        "embeddings": ["array-like"],
        "labels": ["array-like"],
        "n_clusters": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def clustering_nmi(embeddings, labels, *, n_clusters=None, random_state=None) -> float:
    """Normalized mutual information between the labels and a k-means clustering.

    The clustering quality of retrieval embeddings: the embeddings are L2-normalized, clustered
    by :class:`~sklearn.cluster.KMeans` (10 initializations) into `n_clusters` clusters, and
    the clusters are compared with the labels by
    :func:`~sklearn.metrics.normalized_mutual_info_score` (arithmetic normalization).

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, n_features)
        One embedding per sample; zero vectors are an error (they cannot be normalized).
    labels : array-like of shape (n_samples,)
        Class of each sample.
    n_clusters : int, default=None
        Number of clusters; ``None`` uses the number of distinct labels.
    random_state : int, RandomState instance or None, default=None
        Seeds k-means; pass an int for a reproducible score.

    Returns
    -------
    nmi : float
        NMI in [0, 1]; 1 when the clusters are the classes.

    Examples
    --------
    >>> from sklearn_caf.metrics import clustering_nmi
    >>> embeddings = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]
    >>> clustering_nmi(embeddings, [0, 0, 1, 1], random_state=0)
    1.0
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    embeddings, labels = _check_embeddings(embeddings, labels, normalize=True)
    if n_clusters is None:
        n_clusters = len(np.unique(labels))
    if n_clusters > len(embeddings):
        raise ValueError(
            f"n_clusters={n_clusters} exceeds the number of samples ({len(embeddings)})."
        )
    clusters = KMeans(n_clusters=n_clusters, n_init=10, random_state=random_state).fit_predict(
        embeddings
    )
    return float(normalized_mutual_info_score(labels, clusters))
