"""The cluster count follows the data, not the corpus size: the same activities over more segments
give the same k; new activities give a larger k."""

from __future__ import annotations

import pytest

from handclust.config import ClusterConfig
from handclust.core.clustering import cluster_segments, fuse
from handclust.core.metrics import agreement
from handclust.synthetic.footage_v1 import planted_segment_descriptors

pytestmark = pytest.mark.slow  # clusters corpora of up to thousands of segments

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


def test_fit_on_a_sample_places_the_rest_by_neighbours():
    mods, clip_ids, truth = planted_segment_descriptors(3000, 6, seed=1)
    cfg = ClusterConfig(backend="cpu", max_fit_segments=800)
    c = cluster_segments(fuse(mods, clip_ids, cfg).fused, cfg)
    assert "fit on 800 of 3000" in c.backends["hdbscan"]
    assert 5 <= c.k <= 7 and agreement(truth, c.activity)["ari"] > 0.75
    assert len(c.labels) == 3000 and c.noise_rate < 0.2


def test_saved_fusion_transforms_new_segments_like_the_fit(tmp_path):
    from handclust.core.clustering import Fusion

    mods, clip_ids, _ = planted_segment_descriptors(600, 6, seed=2)
    fusion = fuse(mods, clip_ids, CFG)
    fusion.save(str(tmp_path / "fusion.npz"))
    again = Fusion.load(str(tmp_path / "fusion.npz")).transform(mods, clip_ids)
    assert abs(again - fusion.fused).max() < 1e-5


def test_large_corpora_cluster_on_principal_components_and_find_the_same_activities():
    mods, clip_ids, truth = planted_segment_descriptors(3000, 6, seed=3)
    fused = fuse(mods, clip_ids, CFG).fused
    assert fused.shape[1] > 16
    full = cluster_segments(fused, ClusterConfig(backend="cpu", hdbscan_reduce_from=10_000))  # below: every dim
    reduced = cluster_segments(fused, ClusterConfig(backend="cpu", hdbscan_reduce_from=2000))  # at or above: 16 PCs
    assert "principal components" not in full.reason
    assert f"16 principal components of {fused.shape[1]} fused dims" in reduced.reason
    assert full.k == reduced.k == 6
    assert agreement(truth, reduced.activity)["ari"] > 0.9 and agreement(full.activity, reduced.activity)["ari"] > 0.9
