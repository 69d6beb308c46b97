"""The sort-and-group fusion helpers give what the per-clip loops they replaced gave (float tolerance),
in float32, and fast enough for 200k segments over 2000 clips."""

from __future__ import annotations

import time

import numpy as np

from handclust.core.clustering.fusion import clip_positions, fit_modality, normalise_within_clips


def loop_normalise_within_clips(x, clip_ids, rows=None, prior=2.0):
    """The definition before the vectorised one: one pass over all rows per clip, float64."""
    x = np.nan_to_num(np.asarray(x, np.float64))
    rows = np.ones(len(x), bool) if rows is None else rows
    if not rows.any():
        return x
    g_mean = x[rows].mean(axis=0)
    g_sd = float(np.sqrt(((x[rows] - g_mean) ** 2).sum(axis=1).mean())) or 1.0
    out = x.copy()
    for c in np.unique(clip_ids):
        sel = clip_ids == c
        obs = sel & rows
        m = int(obs.sum())
        mean = (x[obs].sum(axis=0) + prior * g_mean) / (m + prior)
        var = (((x[obs] - mean) ** 2).sum() + prior * g_sd**2) / (m + prior)
        out[sel] = (x[sel] - mean) / max(np.sqrt(var), 1e-9) * g_sd + g_mean
    return out


def loop_clip_positions(clip_ids):
    _, inv = np.unique(clip_ids, return_inverse=True)
    pos = np.zeros(len(inv), np.int64)
    seen: dict[int, int] = {}
    for i, c in enumerate(inv.tolist()):
        pos[i] = seen.get(c, 0)
        seen[c] = pos[i] + 1
    return pos


def corpus(n=3000, n_clips=40, d=24, seed=0):
    rng = np.random.default_rng(seed)
    clip_ids = np.array([f"c{i:03d}" for i in rng.integers(0, n_clips, n)], dtype=object)
    style = rng.normal(0, 2.0, (n_clips, d))
    x = (rng.normal(0, 1.0, (n, d)) + style[[int(c[1:]) for c in clip_ids]] + 5.0).astype(np.float32)
    x[rng.random(n) < 0.01, 3] = np.nan  # a NaN now and then, as unmeasured periods write
    return x, clip_ids, rng


def test_normalise_within_clips_matches_the_loop_definition():
    x, clip_ids, rng = corpus()
    rows = rng.random(len(x)) > 0.2  # a sparse modality: statistics from the observed rows only
    clip_ids[:5] = "lonely"  # a clip of five rows, shrunk towards the corpus
    clip_ids[5] = "one"  # and a clip of one row
    for r in (None, rows):
        new = normalise_within_clips(x, clip_ids, r)
        old = loop_normalise_within_clips(x, clip_ids, r)
        assert new.dtype == np.float32
        np.testing.assert_allclose(new, old, rtol=1e-4, atol=1e-4)


def test_clip_positions_match_the_loop_definition():
    _, clip_ids, _ = corpus(n=2000)
    assert np.array_equal(clip_positions(clip_ids), loop_clip_positions(clip_ids))


def test_fit_modality_matches_float64_statistics():
    x, _, _ = corpus(d=40)
    x = np.nan_to_num(x)
    t = fit_modality(x, dims=12)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(t.mean, x64.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(t.scale, x64.std(axis=0), rtol=1e-5)
    z = (x64 - x64.mean(axis=0)) / x64.std(axis=0)
    _, _, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    # The same principal subspace (directions may flip sign).
    np.testing.assert_allclose(np.abs(t.components @ vt[:12].T), np.eye(12), atol=1e-4)
    out = t(x)
    assert out.dtype == np.float32 and out.shape == (len(x), 12)
    ref = z @ vt[:12].T
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs(out), np.abs(ref), atol=1e-4)


def test_normalise_within_clips_is_one_pass_over_the_rows():
    # 200k segments x 2000 clips took 11 s with a pass per clip (issue 22); grouped it is a few passes.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200_000, 16)).astype(np.float32)
    clip_ids = np.array([f"clip{i:05d}" for i in rng.integers(0, 2000, len(x))], dtype=object)
    t0 = time.perf_counter()
    normalise_within_clips(x, clip_ids)
    assert time.perf_counter() - t0 < 3.0


def loop_vote_labels(ref_labels, idx, dist):
    w = 1.0 / (dist.astype(np.float64) + 1e-3)
    lab = ref_labels[idx]
    classes = np.unique(lab)
    scores = np.stack([(w * (lab == c)).sum(axis=1) for c in classes], axis=1)
    best = scores.argmax(axis=1)
    share = scores[np.arange(len(best)), best] / np.maximum(scores.sum(axis=1), 1e-12)
    return classes[best].astype(np.int32), share.astype(np.float32)


def loop_assign_noise(labels, knn_idx, knn_dist, x):
    from handclust.core.clustering.neighbours import l2_normalise

    out = labels.copy()
    moved = np.zeros(len(labels), bool)
    clusters = np.unique(labels[labels >= 0])
    if len(clusters) == 0:
        return out, moved
    centroids = l2_normalise(np.stack([x[labels == c].mean(axis=0) for c in clusters]))
    for i in np.flatnonzero(labels < 0):
        votes: dict[int, float] = {}
        for j, d in zip(knn_idx[i], knn_dist[i], strict=True):
            if labels[j] >= 0:
                votes[int(labels[j])] = votes.get(int(labels[j]), 0.0) + 1.0 / (float(d) + 1e-3)
        out[i] = max(votes, key=votes.__getitem__) if votes else int(clusters[np.argmax(centroids @ x[i])])
        moved[i] = True
    return out, moved


def test_votes_and_noise_assignment_match_the_loop_definitions():
    from handclust.core.clustering.neighbours import assign_noise, l2_normalise, vote_labels

    rng = np.random.default_rng(5)
    n, k = 3000, 8
    x = l2_normalise(rng.normal(size=(n, 12)))
    labels = rng.integers(-1, 7, n).astype(np.int32)
    labels[rng.random(n) < 0.3] = -1  # plenty of noise, some with only noise neighbours
    idx = rng.integers(0, n, (n, k))
    dist = np.round(rng.random((n, k)), 1).astype(np.float32)  # rounded: many exact ties
    idx[:50] = np.flatnonzero(labels < 0)[:k]  # rows whose neighbours are all noise: nearest centroid
    new_l, new_s = vote_labels(labels, idx, dist)
    old_l, old_s = loop_vote_labels(labels, idx, dist)
    assert np.array_equal(new_l, old_l) and np.allclose(new_s, old_s, atol=1e-6)
    new_a, new_m = assign_noise(labels, idx, dist, x)
    old_a, old_m = loop_assign_noise(labels, idx, dist, x)
    assert np.array_equal(new_a, old_a) and np.array_equal(new_m, old_m)
