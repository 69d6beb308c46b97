"""Clusters private to some clips: a person's own version of a shared activity joins it (so do two
groups of clips' versions of one activity); a clip from another world keeps its own activities;
two activities of the same clips stay two; with two clips nothing merges
(handclust/core/clustering/shared.py)."""

import numpy as np

from handclust.core.clustering.shared import merge_single_clip_clusters


def _corpus(rng, private_offset):
    """4 clips x (activity 0, activity 1), 10 segments each; clip c3's activity 1 is its own cluster (2)."""
    protos = rng.normal(0, 1, (2, 32))
    x, clips, labels = [], [], []
    for c in range(4):
        for a in (0, 1):
            centre = protos[a] + (private_offset if (c == 3 and a == 1) else 0)
            x.append(centre + rng.normal(0, 0.3, (10, 32)))
            clips += [f"c{c}"] * 10
            labels += [2 if (c == 3 and a == 1) else a] * 10
    return np.vstack(x).astype(np.float32), np.asarray(clips, dtype=object), np.asarray(labels, np.int32)


def test_a_persons_own_version_of_a_shared_activity_joins_it():
    rng = np.random.default_rng(0)
    x, clips, labels = _corpus(rng, private_offset=rng.normal(0, 0.25, 32))
    sm = merge_single_clip_clusters(labels, x, clips)
    assert sm.merged == {2: 1}
    assert set(np.unique(sm.labels)) == {0, 1}
    assert "1 joined" in sm.reason


def test_a_clip_from_another_world_keeps_its_own_activities():
    rng = np.random.default_rng(1)
    x, clips, labels = _corpus(rng, private_offset=0)
    world = rng.normal(0, 1, (20, 32)) * 3  # clip c3 shows other work: both its clusters are its own
    x[clips == "c3"] = (world + rng.normal(0, 0.3, (20, 32))).astype(np.float32)
    labels[clips == "c3"] = np.repeat([5, 6], 10)
    sm = merge_single_clip_clusters(labels, x, clips)
    assert sm.merged == {}
    np.testing.assert_array_equal(sm.labels, labels)
    assert "0 joined" in sm.reason


def test_two_clips_never_merge_and_noise_stays_noise():
    rng = np.random.default_rng(2)
    x, clips, labels = _corpus(rng, private_offset=0)
    two = np.isin(clips, ["c0", "c1"])
    lab = labels[two].copy()
    lab[clips[two] == "c1"] += 3  # each clip's activities its own clusters, as two trades would be
    sm = merge_single_clip_clusters(lab, x[two], clips[two])
    np.testing.assert_array_equal(sm.labels, lab)
    assert "2 clips" in sm.reason
    labels[:3] = -1
    x2, clips2, _ = _corpus(np.random.default_rng(0), private_offset=0)
    assert (merge_single_clip_clusters(labels, x2, clips2).labels[:3] == -1).all()


def _versions(rng, cooccur):
    """6 clips x (activity 0, activity 1, activity 2), 8 segments each. Activity 2 looks a little
    different in clips c3-c5 and HDBSCAN split it: cluster 2 in c0-c2, cluster 3 in c3-c5. With
    ``cooccur``, cluster 3 is instead a second activity of clips c0-c2 (close to activity 2, as
    buttering a pan is to pouring dough)."""
    protos = rng.normal(0, 1, (3, 32))
    offset = rng.normal(0, 0.1, 32)
    x, clips, labels = [], [], []
    for c in range(6):
        for a in (0, 1, 2):
            centre = protos[a] + (offset if (a == 2 and c >= 3) else 0)
            x.append(centre + rng.normal(0, 0.3, (8, 32)))
            clips += [f"c{c}"] * 8
            labels += [3 if (a == 2 and c >= 3) else a] * 8
        if cooccur and c < 3:
            x.append(protos[2] + offset + rng.normal(0, 0.3, (8, 32)))
            clips += [f"c{c}"] * 8
            labels += [3] * 8
    if cooccur:  # activity 2 is in every clip, its close cousin (3) only in c0-c2
        labels = [2 if lab == 3 and int(cl[1:]) >= 3 else lab for lab, cl in zip(labels, clips)]
    return np.vstack(x).astype(np.float32), np.asarray(clips, dtype=object), np.asarray(labels, np.int32)


def test_two_groups_of_clips_versions_of_one_activity_become_one():
    x, clips, labels = _versions(np.random.default_rng(3), cooccur=False)
    sm = merge_single_clip_clusters(labels, x, clips)
    assert sm.merged == {2: 3} or sm.merged == {3: 2}
    assert len(np.unique(sm.labels)) == 3
    # each activity now spans every clip, as it does in the footage
    for c in np.unique(sm.labels):
        assert len(np.unique(clips[sm.labels == c])) == 6


def test_two_activities_of_the_same_clips_stay_two():
    x, clips, labels = _versions(np.random.default_rng(4), cooccur=True)
    sm = merge_single_clip_clusters(labels, x, clips)
    assert sm.merged == {}
    np.testing.assert_array_equal(sm.labels, labels)
    assert not merge_single_clip_clusters(labels, x, clips, partial=False).merged


def _private_corpus():
    """6 clips x 2 activities, 6 segments each; every clip does each activity its own tight way."""
    rng = np.random.default_rng(0)
    protos = rng.normal(0, 1, (2, 16)) * 3
    x, clips, truth = [], [], []
    for c in range(6):
        for a in range(2):
            x.append(protos[a] + rng.normal(0, 1, 16) + rng.normal(0, 0.1, (6, 16)))
            clips += [f"clip{c}"] * 6
            truth += [a] * 6
    return np.vstack(x).astype(np.float32), np.asarray(clips, dtype=object), np.asarray(truth)


def test_when_most_clusters_are_one_clips_own_a_coarser_density_finds_the_shared_activities():
    """cluster.max_private_share: 12 clusters, each one clip's version of an activity, become the 2
    activities every clip does; off (the default), the 12 stay."""
    from handclust.config import load_config
    from handclust.core.clustering.grouping import group_segments, private_clusters

    x, clips, truth = _private_corpus()
    base = ["cluster.size_scale=0.7", "cluster.temporal=false", "cluster.fine=false", "cluster.scaling.features=whole"]
    off = group_segments({"features": x}, clips, np.full(len(x), 2.0), load_config(None, base).cluster).clustering
    assert private_clusters(off.labels, clips) == (12, 12)
    on = group_segments({"features": x}, clips, np.full(len(x), 2.0),
                        load_config(None, base + ["cluster.max_private_share=0.5"]).cluster).clustering
    assert private_clusters(on.labels, clips) == (0, 2)
    assert on.min_cluster_size > off.min_cluster_size
    assert all(len(set(on.labels[truth == a])) == 1 for a in (0, 1))
    assert "12 of 12 clusters inside one clip" in on.reason
