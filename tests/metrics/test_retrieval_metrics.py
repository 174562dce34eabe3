"""Recall@k and clustering NMI of retrieval embeddings."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from sklearn_caf.metrics import _retrieval as metrics
from sklearn_caf.metrics import clustering_nmi, recall_at_k


def brute_force_recall(embeddings, labels, ks, metric):
    embeddings = np.asarray(embeddings, dtype=np.float64)
    hits = {k: 0 for k in ks}
    for i, query in enumerate(embeddings):
        ranked = []
        for j, other in enumerate(embeddings):
            if j == i:
                continue
            if metric == "cosine":
                d = 1 - query @ other / (np.linalg.norm(query) * np.linalg.norm(other))
            else:
                d = np.sqrt(((query - other) ** 2).sum())
            ranked.append((d, j))
        ranked.sort()
        for k in ks:
            hits[k] += any(labels[j] == labels[i] for _, j in ranked[:k])
    return {k: hits[k] / len(embeddings) for k in ks}


def test_hand_made_euclidean():
    embeddings = [[0.0], [0.1], [1.0], [1.2], [5.0]]
    labels = [0, 0, 1, 0, 1]
    # Nearest neighbours: 0->0.1 (hit), 0.1->0 (hit), 1->1.2 (miss), 1.2->1 (miss), 5->1.2
    # (miss); second neighbours add 1.2->0.1 and 5->1.
    assert recall_at_k(embeddings, labels, metric="euclidean") == 0.4
    assert recall_at_k(embeddings, labels, k=[2, 1, 4], metric="euclidean") == {
        2: 0.8,
        1: 0.4,
        4: 1.0,
    }


def test_hand_made_cosine_ignores_norms():
    # Directions: a, a (scaled), b, -a. Cosine distance only sees the angle.
    embeddings = [[1.0, 0.0], [10.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
    labels = [0, 0, 1, 1]
    # 0 <-> 1 are hits; 2's nearest is 0 (cos 0, index before 1): miss; 3's nearest is 2
    # (cos 0) before 0 and 1 (cos -1): hit.
    assert recall_at_k(embeddings, labels) == 0.75
    assert recall_at_k(embeddings, labels, k=3) == 1.0
    # Euclidean distance sees the norms: 0's nearest becomes 2 (sqrt 2 < 2), a miss, and 2 is
    # at sqrt 2 from both 0 and 3 (tie: 0 first, a miss).
    assert recall_at_k(embeddings, labels, metric="euclidean") == 0.5


def test_query_is_excluded_and_ties_go_to_the_lower_index():
    # 0 is at distance 1 from both 1 and 2; 1 comes first. A copy of a query (index 3) is
    # its neighbour, the query itself is not.
    embeddings = [[0.0], [-1.0], [1.0], [0.0]]
    assert recall_at_k(embeddings, [0, 1, 0, 2], metric="euclidean") == 0.25  # only 2 -> 0
    assert recall_at_k(embeddings, [0, 1, 0, 0], metric="euclidean") == 0.75
    assert recall_at_k(embeddings, [5, 1, 0, 5], k=1, metric="euclidean") == 0.5
    # 2's neighbours at distance 1 are 0 and 3 (a tie): 0 comes first, a miss; 3 would hit.
    assert recall_at_k(embeddings, [2, 1, 0, 0], k=1, metric="euclidean") == 0.0
    assert recall_at_k(embeddings, [2, 1, 0, 0], k=2, metric="euclidean") == 0.25


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_matches_brute_force(metric, monkeypatch):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(60, 5))
    labels = rng.integers(0, 6, 60)
    expected = brute_force_recall(embeddings, labels, [1, 2, 5, 59], metric)
    assert recall_at_k(embeddings, labels, k=[1, 2, 5, 59], metric=metric) == expected
    # Several blocks of queries give the same answer.
    monkeypatch.setattr(metrics, "_RECALL_BLOCK_ELEMENTS", 7 * 60)
    assert recall_at_k(embeddings, labels, k=[1, 2, 5, 59], metric=metric) == expected
    assert recall_at_k(embeddings, labels, k=np.int64(2), metric=metric) == expected[2]


def test_recall_errors():
    embeddings = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match="k must be between 1 and n_samples - 1 = 2"):
        recall_at_k(embeddings, [0, 0, 1], k=3)
    with pytest.raises(ValueError, match="k must be between 1"):
        recall_at_k(embeddings, [0, 0, 1], k=[1, 0])
    with pytest.raises(ValueError, match="k must be an int or a non-empty sequence"):
        recall_at_k(embeddings, [0, 0, 1], k=[1.5])
    with pytest.raises(ValueError, match="labels must be 1-D with one label per embedding"):
        recall_at_k(embeddings, [0, 1])
    with pytest.raises(ValueError, match=r"embeddings has a zero vector \(row 1\)"):
        recall_at_k([[1.0], [0.0], [2.0]], [0, 0, 1])
    # Fine for Euclidean distance; 0's neighbours 1 and 2 tie and 1 comes first.
    assert recall_at_k([[1.0], [0.0], [2.0]], [0, 0, 1], metric="euclidean") == 2 / 3
    with pytest.raises(ValueError, match="metric"):
        recall_at_k(embeddings, [0, 0, 1], metric="manhattan")
    with pytest.raises(ValueError, match="embeddings contains NaN"):
        recall_at_k([[1.0], [np.nan], [2.0]], [0, 0, 1])
    with pytest.raises(ValueError, match="at least 2 samples"):
        recall_at_k([[1.0]], [0])


def test_clustering_nmi_on_separated_classes():
    rng = np.random.default_rng(1)
    centers = np.eye(4) * 5
    labels = np.repeat(np.arange(4), 10)
    embeddings = centers[labels] + rng.normal(0, 0.1, (40, 4))
    assert clustering_nmi(embeddings, labels, random_state=0) == pytest.approx(1.0)
    # Only directions count: rescaling each embedding changes nothing.
    scaled = embeddings * rng.uniform(0.1, 10, (40, 1))
    assert clustering_nmi(scaled, labels, random_state=0) == pytest.approx(1.0)
    # Two clusters for four classes: half the information.
    two = clustering_nmi(embeddings, labels, n_clusters=2, random_state=0)
    assert 0 < two < 1


def test_clustering_nmi_matches_kmeans_on_normalized_embeddings():
    rng = np.random.default_rng(2)
    embeddings = rng.normal(size=(50, 3))
    labels = rng.integers(0, 3, 50)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    clusters = KMeans(n_clusters=3, n_init=10, random_state=7).fit_predict(unit)
    expected = normalized_mutual_info_score(labels, clusters)
    assert clustering_nmi(embeddings, labels, random_state=7) == expected
    assert clustering_nmi(embeddings, labels, random_state=7) == clustering_nmi(
        embeddings, labels, random_state=7
    )


def test_clustering_nmi_errors():
    with pytest.raises(ValueError, match="n_clusters=4 exceeds the number of samples"):
        clustering_nmi([[1.0, 0], [0, 1.0], [1, 1.0]], [0, 1, 2], n_clusters=4)
    with pytest.raises(ValueError, match="embeddings has a zero vector"):
        clustering_nmi([[1.0, 0], [0, 0.0]], [0, 1])
    with pytest.raises(ValueError, match="n_clusters"):
        clustering_nmi([[1.0, 0], [0, 1.0]], [0, 1], n_clusters=0)
