"""The cluster count follows the data, not the corpus size: the same activities over more segments
give the same k; new activities give a larger k."""

from __future__ import annotations

from handclust.clustering import cluster_segments, fuse
from handclust.config import ClusterConfig
from handclust.metrics import agreement
from handclust.synthetic import planted_segment_descriptors

CFG = ClusterConfig(backend="cpu")


def discovered(n_segments: int, n_activities: int, seed: int = 0) -> tuple[int, float]:
    mods, clip_ids, truth = planted_segment_descriptors(n_segments, n_activities, seed=seed)
    c = cluster_segments(fuse(mods, clip_ids, CFG).fused, CFG)
    return c.k, agreement(truth, c.activity)["ari"]


def test_k_stays_put_as_the_corpus_grows():
    # The same 6 activities over 1x, 2x, 4x, 8x more segments.
    results = [discovered(n, 6) for n in (400, 800, 1600, 3200)]
    ks = [k for k, _ in results]
    assert max(ks) - min(ks) <= 1, ks
    assert all(5 <= k <= 7 for k in ks), ks
    assert all(ari > 0.75 for _, ari in results), results


def test_new_activities_grow_k():
    k6, _ = discovered(1600, 6)
    k8, ari8 = discovered(1600 * 8 // 6, 8)
    assert k8 >= k6 + 2 and k8 <= 9, (k6, k8)
    assert ari8 > 0.9
