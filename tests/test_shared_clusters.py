"""Single-clip clusters: a person's own version of a shared activity joins it; a clip from another
world keeps its own activities; with two clips nothing merges (handclust/core/clustering/shared.py)."""

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
    assert "2 kept" in sm.reason


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
