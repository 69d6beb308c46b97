"""Nearest neighbours of fused segment vectors (cosine): the kNN graph, queries against a
reference set, votes, and noise given to its nearest activity."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from handclust.core.clustering.backends import NeighbourIndex, model_name, pick_neighbours, resolve

F32 = npt.NDArray[np.float32]


def l2_normalise(x: npt.NDArray[np.floating]) -> F32:
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 1e-12, n, 1.0)


# --------------------------------------------------------------------------- neighbours


def neighbour_index(backend: str | NeighbourIndex) -> NeighbourIndex:
    """``backend`` itself when it is an index, else the one ``cluster.backend`` (auto | cpu | gpu) picks."""
    if not isinstance(backend, str):
        return backend
    return pick_neighbours(*resolve(backend))[0]


def knn_graph(x: npt.NDArray[np.floating], k: int, backend: str | NeighbourIndex = "auto") -> tuple[npt.NDArray[np.int64], F32, str]:
    """k nearest neighbours (cosine, self excluded) of every row: ``(n, k)`` indices and distances,
    and the name of the index that searched."""
    x = l2_normalise(x)
    n = len(x)
    k_eff = min(k, n - 1)
    if k_eff < 1:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32), "none"
    index = neighbour_index(backend)
    idx, dist = index.search(x, x, k_eff + 1)
    # Drop self: it is usually first, but ties (duplicates) can put it elsewhere; where self is
    # missing from the k+1 (many exact duplicates), drop the last neighbour instead.
    is_self = idx == np.arange(n)[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    is_self &= np.cumsum(is_self, axis=1) == 1
    keep = ~is_self
    out_i = idx[keep].reshape(n, k_eff).astype(np.int64)
    out_d = dist[keep].reshape(n, k_eff).astype(np.float32)
    return out_i, out_d, model_name(index)


def knn_query(reference: npt.NDArray[np.floating], queries: npt.NDArray[np.floating], k: int,
              backend: str | NeighbourIndex = "auto") -> tuple[npt.NDArray[np.int64], F32, str]:
    """k nearest ``reference`` rows (cosine) of each query row: ``(n_q, k)`` indices and distances."""
    ref, q = l2_normalise(reference), l2_normalise(queries)
    index = neighbour_index(backend)
    idx, dist = index.search(ref, q, min(k, len(ref)))
    return idx.astype(np.int64), dist.astype(np.float32), model_name(index)


def _class_scores(lab: npt.NDArray[np.integer], w: npt.NDArray[np.float64], classes: npt.NDArray[np.integer],
                  valid: npt.NDArray[np.bool_] | None = None) -> npt.NDArray[np.float64]:
    """``(n, K)`` summed weights ``w`` ``(n, k)`` of each row's neighbours per class of ``classes``
    (sorted), by one ``bincount`` over (row, class) instead of a pass over all rows per class (at a
    million queries and a hundred activities that was the step's cost). Each bin adds its weights
    in neighbour order, as a loop over the neighbours would."""
    n = lab.shape[0]
    col = np.searchsorted(classes, lab)
    keep = np.ones(lab.shape, bool) if valid is None else valid
    flat = (np.arange(n)[:, None] * len(classes) + col)[keep]
    return np.bincount(flat, weights=w[keep], minlength=n * len(classes)).reshape(n, len(classes))


def vote_labels(ref_labels: npt.NDArray[np.int32], idx: npt.NDArray[np.int64], dist: F32,
                ) -> tuple[npt.NDArray[np.int32], F32]:
    """Label each query by the 1/distance-weighted vote of its reference neighbours (noise votes
    too: a query among noise stays noise); returns labels and the winning share of the vote."""
    w = 1.0 / (dist.astype(np.float64) + 1e-3)
    lab = ref_labels[idx]
    classes = np.unique(lab)
    scores = _class_scores(lab, w, classes)
    best = scores.argmax(axis=1)
    share = scores[np.arange(len(best)), best] / np.maximum(scores.sum(axis=1), 1e-12)
    return classes[best].astype(np.int32), share.astype(np.float32)


def assign_noise(labels: npt.NDArray[np.int32], knn_idx: npt.NDArray[np.int64], knn_dist: F32, x: F32) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.bool_]]:
    """Give each noise point the cluster its non-noise neighbours vote for (1/distance weights);
    with no such neighbour, the cluster with the nearest centroid. Among clusters with equal votes,
    the one met first in the neighbour list (as the per-point loop this replaces chose)."""
    out = labels.copy()
    moved = np.zeros(len(labels), bool)
    clusters = np.unique(labels[labels >= 0])
    if len(clusters) == 0:
        return out, moved
    noise = np.flatnonzero(labels < 0)
    if len(noise) == 0:
        return out, moved
    lab = labels[knn_idx[noise]] if knn_idx.size else np.full((len(noise), 0), -1, labels.dtype)
    valid = lab >= 0
    w = 1.0 / (knn_dist[noise].astype(np.float64) + 1e-3) if knn_idx.size else np.zeros(lab.shape)
    scores = _class_scores(np.where(valid, lab, clusters[0]), w, clusters, valid)
    k = lab.shape[1]
    first = np.full(scores.shape, k, np.int64)  # where each cluster first appears among the neighbours
    for j in range(k - 1, -1, -1):
        rows = np.flatnonzero(valid[:, j])
        first[rows, np.searchsorted(clusters, lab[rows, j])] = j
    top = scores.max(axis=1, keepdims=True)
    tied = (scores == top) & (first < k)
    pick = np.argmin(np.where(tied, first, k + 1), axis=1)
    voted = valid.any(axis=1)
    choice = clusters[pick]
    if not voted.all():
        cent = l2_normalise(np.stack([x[labels == c].mean(axis=0) for c in clusters]))
        lone = noise[~voted]
        choice[~voted] = clusters[np.argmax(np.asarray(x[lone], np.float32) @ cent.T, axis=1)]
    out[noise] = choice
    moved[noise] = True
    return out, moved
