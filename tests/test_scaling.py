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


def test_an_activity_too_rare_for_the_sample_is_found_by_the_second_pass():
    """Above max_fit_segments the sample sets the resolution: an activity with too few segments in it
    to reach min_cluster_size is merged into its nearest cluster (or noise) there. The second pass
    clusters each cluster's members again at the whole corpus' min_cluster_size and splits it, so
    K keeps growing with the corpus (issue 22, point 10), without splitting the common activities."""
    import numpy as np

    mods, clip_ids, truth = planted_segment_descriptors(3600, 7, seed=4)
    rare = np.flatnonzero(truth == 6)
    keep = np.sort(np.r_[np.flatnonzero(truth != 6), rare[:60]])  # 60 of ~3100 segments: 1.9 %
    mods, clip_ids, truth = {m: v[keep] for m, v in mods.items()}, clip_ids[keep], truth[keep]
    cfg = ClusterConfig(backend="cpu", max_fit_segments=400, second_pass=False)  # min_cluster_size 10; ~8 rare ones sampled
    fused = fuse(mods, clip_ids, cfg).fused
    one = cluster_segments(fused, cfg)
    two = cluster_segments(fused, cfg.model_copy(update={"second_pass": True}))
    in_rare = truth == 6

    def rare_cluster_share(c):  # the share of the rare activity in its most common non-noise cluster, and that cluster's purity
        lab = c.labels[in_rare]
        if not (lab >= 0).any():
            return 0.0, 0.0
        best = np.bincount(lab[lab >= 0]).argmax()
        return float((lab == best).mean()), float(in_rare[c.labels == best].mean())

    share1, purity1 = rare_cluster_share(one)
    share2, purity2 = rare_cluster_share(two)
    assert not (share1 > 0.5 and purity1 > 0.8), (share1, purity1)  # the sample alone does not find it
    assert share2 > 0.7 and purity2 > 0.8, (share2, purity2)
    assert two.k == one.k + 1 and "second pass" in two.backends["hdbscan"]
    # The common activities are still found as before.
    common = ~in_rare
    assert agreement(truth[common], two.activity[common])["ari"] > 0.75
