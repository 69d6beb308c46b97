"""Fusion and grouping on planted segment sequences with a known truth: clip style must not decide
the clusters, a modality that separates kinds of work keeps its weight, few segments give sane
weights, and timelines follow bouts rather than single noisy segments."""

from __future__ import annotations

import numpy as np
import pytest

from handclust.config import ClusterConfig
from handclust.core.clustering import fuse, group_segments
from handclust.core.clustering.temporal import smooth_timelines, viterbi
from handclust.core.metrics import agreement

CFG = ClusterConfig(backend="cpu")


def bouts(rng: np.random.Generator, n_segments: int, activities: list[int], mean_bout: float = 4.0) -> np.ndarray:
    """Activity per segment in time order: bouts of geometric length drawn from ``activities``."""
    out: list[int] = []
    prev = -1
    while len(out) < n_segments:
        a = int(rng.choice([x for x in activities if x != prev] or activities))
        out += [a] * int(rng.geometric(1.0 / mean_bout))
        prev = a
    return np.asarray(out[:n_segments])


def clips_of(rng: np.random.Generator, n_clips: int, per_clip: int, acts_per_clip: list[list[int]], dim: int = 16,
             centres_scale: float = 3.0, style: float = 0.0, noise: float = 1.0, mean_bout: float = 6.0):
    """Descriptors ``(n, dim)``, clip ids, truth; each clip has its own additive style offset."""
    centres = np.random.default_rng(99).normal(0, centres_scale, (20, dim))
    xs, cids, truth = [], [], []
    for c in range(n_clips):
        act = bouts(rng, per_clip, acts_per_clip[c % len(acts_per_clip)], mean_bout)
        look = rng.normal(0, style, dim)
        xs.append(centres[act] + look + rng.normal(0, noise, (per_clip, dim)))
        cids += [f"clip{c}"] * per_clip
        truth.append(act)
    return np.vstack(xs), np.asarray(cids, dtype=object), np.concatenate(truth)


def test_a_camera_colour_loses_its_weight_and_a_trade_separating_modality_keeps_it():
    rng = np.random.default_rng(0)
    # Two clips of different work (trade A: activities 0-2, trade B: 3-5): "scene" separates the
    # trades and the activities within them; "colour" is one cast per clip plus noise.
    scene, cids, truth = clips_of(rng, 2, 60, [[0, 1, 2], [3, 4, 5]])
    colour = np.where(cids[:, None] == "clip0", 5.0, -5.0) + rng.normal(0, 1.0, (len(cids), 8))
    f = fuse({"scene": scene, "colour": colour}, cids, CFG)
    assert f.scores["scene"].clip_excess > 0.8 and f.scores["colour"].clip_excess > 0.8  # both are islands per clip
    assert f.scores["scene"].weight > 4 * f.scores["colour"].weight, f.scores
    assert not f.scores["scene"].clip_normalised  # two clips: different work, not style
    assert "cannot be told apart" in f.reasons["scene"]
    g = group_segments({"scene": scene, "colour": colour}, cids, np.full(len(cids), 6.0), CFG)
    trade = np.where(cids == "clip0", "A", "B")
    assert agreement(trade, g.clustering.activity)["nmi"] > 0.3  # activities separate the trades
    assert agreement(truth, g.clustering.activity)["ari"] > 0.6


def test_per_clip_style_is_removed_when_three_or_more_clips_are_islands():
    rng = np.random.default_rng(1)
    # Six videos of one task by different people: the same activities, a strong look per video.
    x, cids, truth = clips_of(rng, 6, 50, [[0, 1, 2, 3]], centres_scale=1.0, style=3.0, noise=0.5)
    durations = np.full(len(cids), 5.0)
    auto = group_segments({"features": x}, cids, durations, CFG)
    off = group_segments({"features": x}, cids, durations, ClusterConfig(backend="cpu", clip_normalise="off"))
    assert auto.fusion.scores["features"].clip_normalised and "per-clip style" in auto.fusion.reasons["features"]
    ari_auto = agreement(truth, auto.clustering.activity)["ari"]
    ari_off = agreement(truth, off.clustering.activity)["ari"]
    assert ari_auto > 0.5 and ari_auto > ari_off + 0.3, (ari_auto, ari_off)
    # Clusters are shared across videos, not one per video.
    assert agreement(cids, auto.clustering.activity)["nmi"] < 0.2


def test_few_segments_give_near_equal_weights_and_a_rarely_seen_modality_stays_small():
    rng = np.random.default_rng(2)
    motion, cids, _ = clips_of(rng, 2, 6, [[0, 1], [0, 2]], dim=8)
    scene, _, _ = clips_of(rng, 2, 6, [[3, 4], [5, 6]], dim=8)
    pose = np.zeros((12, 13), np.float32)
    pose[3, 0], pose[3, 1:] = 1.0, rng.normal(0, 1, 12)  # a body seen in 1 of 12 segments
    # the weighting step itself (forward selection, which may then leave a modality out, is tested below)
    f = fuse({"motion": motion, "scene": scene, "pose": pose}, cids, ClusterConfig(backend="cpu", select_modalities=False))
    w = {m: s.weight for m, s in f.scores.items()}
    assert w["pose"] < 0.3, w
    assert 0.6 < w["motion"] / w["scene"] < 1.6, w


def test_unmeasured_rows_have_no_position_and_do_not_vote_in_the_weight():
    rng = np.random.default_rng(3)
    x, cids, _ = clips_of(rng, 3, 40, [[0, 1, 2]], dim=8)
    junk = rng.normal(0, 1, (len(cids), 8))
    measured = np.zeros(len(cids), bool)
    measured[::2] = True
    f = fuse({"motion": x, "rhythm": junk}, cids, CFG, {"rhythm": measured})
    assert f.scores["rhythm"].coverage == pytest.approx(0.5)
    assert not f.transforms["rhythm"](junk, cids, measured)[~measured].any()


def test_viterbi_absorbs_a_lone_flicker_and_keeps_a_real_bout():
    truth = np.array([0] * 8 + [1] * 4 + [0] * 8)
    p = np.full((len(truth), 2), 0.2)
    p[np.arange(len(truth)), truth] = 0.8
    p[3] = [0.2, 0.8]  # one noisy segment inside the first bout
    d = np.full(len(truth), 6.0)
    leave = 1 - np.exp(-d / 30.0)
    path = viterbi(np.log(p), np.log(1 - leave), np.log(leave))
    np.testing.assert_array_equal(path, truth)


def test_timelines_switch_less_after_the_temporal_model():
    rng = np.random.default_rng(4)
    x, cids, truth = clips_of(rng, 4, 60, [[0, 1, 2]], dim=8, centres_scale=1.2, noise=1.0, mean_bout=6.0)
    durations = np.full(len(cids), 6.0)
    plain = group_segments({"m": x}, cids, durations, ClusterConfig(backend="cpu", temporal=False))
    smooth = group_segments({"m": x}, cids, durations, CFG)
    assert smooth.switches is not None and smooth.switches[1] < smooth.switches[0]
    assert agreement(truth, smooth.clustering.activity)["ari"] >= agreement(truth, plain.clustering.activity)["ari"]
    t = smooth_timelines(plain.clustering.activity, plain.clustering.knn_idx, cids, durations, 30.0)
    assert t.switches_after <= t.switches_before


def test_a_run_of_segments_hdbscan_called_noise_keeps_the_activity_they_were_given():
    """The evidence is the activity a user would see without the temporal model: a run of four
    segments HDBSCAN left as noise, given activity 1 by their neighbours (all of activity 1), stands
    amid two bouts of activity 0. Counting only HDBSCAN's labels, the run voted for nothing and the
    bout around it swallowed it (real sets: 20-67 % of segments are noise)."""
    activity = np.array([0] * 10 + [1] * 4 + [0] * 10, np.int32)
    idx = np.arange(len(activity))
    knn = np.stack([np.roll(idx[activity == activity[i]], -1)[:3] if activity[i] == 1 else idx[activity == 0][(np.arange(3) + i + 1) % 20]
                    for i in idx])
    knn = np.where(knn == idx[:, None], (knn + 1) % len(idx), knn)
    t = smooth_timelines(activity, knn, np.full(len(activity), "clip", dtype=object), np.full(len(activity), 3.0), 30.0)
    np.testing.assert_array_equal(t.activity, activity)


@pytest.mark.parametrize("stability", [False, True])
def test_the_number_of_activities_holds_on_small_data_and_says_how_stable_it_is(stability: bool):
    cfg = CFG.model_copy(update={"stability": stability})
    ks = []
    for seed in range(5, 10):
        rng = np.random.default_rng(seed)
        x, cids, _ = clips_of(rng, 3, 20, [[0, 1, 2, 3]], dim=8, centres_scale=2.0)
        g = group_segments({"m": x}, cids, np.full(len(cids), 6.0), cfg)
        # run.json says how k came about: the sizes tried (selection) or how stable the rule's k is.
        assert ("chosen by stability" if stability else "stability of this k: min_cluster_size=") in g.clustering.reason
        ks.append(g.clustering.k)
    # Four planted activities in 60 segments: HDBSCAN may merge the closest pair on a seed, never
    # split into clip-sized pieces, and the typical answer is the planted one.
    assert all(2 <= k <= 5 for k in ks) and sorted(ks)[len(ks) // 2] in (3, 4), ks
    # Identical data, tiny float noise (a re-encode of the same images): the same k.
    rng = np.random.default_rng(5)
    x, cids, _ = clips_of(rng, 3, 20, [[0, 1, 2, 3]], dim=8, centres_scale=2.0)
    k0 = group_segments({"m": x}, cids, np.full(len(cids), 6.0), cfg).clustering.k
    k1 = group_segments({"m": x + rng.normal(0, 1e-3, x.shape)}, cids, np.full(len(cids), 6.0), cfg).clustering.k
    assert k0 == k1


def test_weights_do_not_depend_on_how_clip_ids_sort():
    """Clip ids hash the footage's path, so the same files in another folder get ids that sort
    differently. Rows in the same order must give the same weights and fused vectors: random draws
    made clip by clip (the null shuffles) follow the rows' clip order, not the ids' sort order."""
    x, cids, _ = clips_of(np.random.default_rng(0), 4, 15, [[0, 1, 2], [1, 2, 3]], style=1.0, noise=2.0)
    renamed = np.asarray([{"clip0": "z", "clip1": "y", "clip2": "x", "clip3": "w"}[c] for c in cids], dtype=object)
    a = fuse({"m": x, "n": x[:, ::-1] + 0.5 * np.random.default_rng(5).normal(size=x.shape)}, cids, CFG)
    b = fuse({"m": x, "n": x[:, ::-1] + 0.5 * np.random.default_rng(5).normal(size=x.shape)}, renamed, CFG)
    assert {m: s.weight for m, s in a.scores.items()} == {m: s.weight for m, s in b.scores.items()}
    np.testing.assert_array_equal(a.fused, b.fused)
    assert 0 < a.scores["m"].clusteredness < 1  # scored against the null, not clipped (where the order showed)


def test_forward_selection_keeps_weak_modalities_from_pulling_the_fusion_below_its_best():
    """cluster.select_modalities (off by default, docs/user-guide.md): sample footage had three weak
    modalities outvote a strong one (fused ARI 0.34, scene alone 0.54)."""
    rng = np.random.default_rng(5)
    scene, cids, truth = clips_of(rng, 4, 40, [[0, 1, 2, 3]], dim=12, noise=0.8)
    weak = {m: rng.normal(0, 1, (len(cids), 12)) + 0.3 * clips_of(np.random.default_rng(i), 4, 40, [[4, 5]], dim=12)[0]
            for i, m in enumerate(("motion", "ego", "rhythm"))}
    durations = np.full(len(cids), 8.0)
    select = ClusterConfig(backend="cpu", select_modalities=True)
    alone = group_segments({"scene": scene}, cids, durations, select)
    fused = group_segments({"scene": scene, **weak}, cids, durations, select)
    ari_alone = agreement(truth, alone.clustering.activity)["ari"]
    ari_fused = agreement(truth, fused.clustering.activity)["ari"]
    assert ari_fused >= ari_alone - 0.02, (ari_fused, ari_alone)
    left_out = [m for m, sc in fused.fusion.scores.items() if sc.weight == 0]
    assert left_out and all("left out of the fusion" in fused.fusion.reasons[m] for m in left_out)


def test_two_modalities_that_each_tell_part_of_the_work_apart_are_both_kept():
    rng = np.random.default_rng(6)
    n_clips, per = 4, 60
    truth = np.concatenate([np.repeat(rng.permutation(np.tile(np.arange(4), 4)), per // 16 + 1)[:per] for _ in range(n_clips)])
    cids = np.repeat([f"c{i}" for i in range(n_clips)], per).astype(object)
    centres_a, centres_b = rng.normal(0, 3, (2, 8)), rng.normal(0, 3, (2, 8))
    a = centres_a[truth // 2] + rng.normal(0, 1, (len(truth), 8))  # tells {0,1} from {2,3}
    b = centres_b[truth % 2] + rng.normal(0, 1, (len(truth), 8))  # tells {0,2} from {1,3}
    f = fuse({"scene": a, "motion": b}, cids, ClusterConfig(backend="cpu", select_modalities=True))
    assert all(sc.weight > 0 for sc in f.scores.values()), f.reasons


def test_correlated_columns_without_clusters_earn_no_confidence():
    """A short descriptor whose columns move together (one quantity sets all of them, as a period
    sets a spectrum's bins) but that holds no groups must not outweigh one that separates the work:
    the confidence's null shuffles each column on its own, which breaks their correlation as well as
    any structure, so a modality is scored on its principal axes (uncorrelated columns)."""
    rng = np.random.default_rng(3)
    scene, cids, _ = clips_of(rng, 4, 50, [[0, 1, 2], [0, 1, 2]], dim=24)
    latent = rng.normal(0, 1, len(cids))  # one continuous quantity, no groups
    loading = rng.uniform(0.5, 1.5, 8)
    spectrum = latent[:, None] * loading + rng.normal(0, 0.3, (len(cids), 8))
    f = fuse({"scene": scene, "spectrum": spectrum}, cids, CFG)
    assert f.scores["spectrum"].clusteredness < 0.5 * f.scores["scene"].clusteredness, f.scores
    assert f.scores["scene"].weight > 1.5 * f.scores["spectrum"].weight, f.scores
    # Rotating onto principal axes keeps the distances within the modality.
    t = f.transforms["spectrum"]
    a, b = t(spectrum[:5]), t(spectrum[5:10])
    z = (spectrum - t.mean) / t.scale
    raw = z / np.linalg.norm(z, axis=1, keepdims=True)
    np.testing.assert_allclose(a @ b.T, raw[:5] @ raw[5:10].T, atol=1e-4)


def test_rows_that_are_whole_actions_keep_their_changes():
    """Every row a whole action (each boundary a change, as in real IKEA segments): the sticky prior
    alone joined neighbouring actions and lost to the clusters without it; where the features jump,
    a change stays at least as likely as not, so the timelines keep what the clusters found."""
    rng = np.random.default_rng(7)
    x, cids, truth = clips_of(rng, 6, 40, [[0, 1, 2, 3]], dim=8, centres_scale=1.5, noise=1.0, mean_bout=1.0)
    assert (truth[1:] != truth[:-1]).mean() > 0.9  # the planted set is what the test says
    durations = np.full(len(cids), 6.0)
    plain = group_segments({"m": x}, cids, durations, CFG.model_copy(update={"temporal": False}))
    smooth = group_segments({"m": x}, cids, durations, CFG)
    ari_plain = agreement(truth, plain.clustering.activity)["ari"]
    ari_smooth = agreement(truth, smooth.clustering.activity)["ari"]
    assert ari_plain > 0.3, ari_plain
    assert ari_smooth >= ari_plain - 0.02, (ari_smooth, ari_plain, smooth.temporal_reason)
    assert "features jump at" in (smooth.temporal_reason or "")


def test_feature_jumps_compare_the_data_with_itself():
    """A jump is a pair farther apart than two typical members of their activities: consecutive
    segments of one bout are not, a change of activity is. The same at any scale of the vectors and
    however many other segments the corpus holds (a kNN-list test was not)."""
    from handclust.core.clustering.temporal import feature_jumps

    def corpus(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        act = np.repeat(np.tile([0, 1], 4), 5).astype(np.int32)  # 8 bouts of 5 segments, alternating
        bout_at = np.repeat(rng.normal(0, 1.0, (8, 2)), 5, axis=0)  # where each bout sits in its activity
        return np.array([[0.0, 0.0], [10.0, 0.0]])[act] + bout_at + rng.normal(0, 0.3, (40, 2)), act

    rng = np.random.default_rng(3)
    x, act = corpus(rng)
    first, second = np.arange(39), np.arange(1, 40)
    jumps = feature_jumps(x, act, first, second)
    np.testing.assert_array_equal(jumps, act[1:] != act[:-1])
    np.testing.assert_array_equal(feature_jumps(3.0 * x, act, first, second), jumps)
    others = [corpus(rng) for _ in range(20)]  # 20 more clips of the same work
    more = np.vstack([x] + [o[0] for o in others])
    more_act = np.concatenate([act] + [o[1] for o in others])
    np.testing.assert_array_equal(feature_jumps(more, more_act, first, second), jumps)
    act_noise = act.copy()
    act_noise[12] = -1  # a row with no activity takes the median radius
    np.testing.assert_array_equal(feature_jumps(x, act_noise, first, second), jumps)
    assert feature_jumps(x, act, first[:0], second[:0]).shape == (0,)


def test_jumps_at_most_boundaries_are_weaker_evidence_of_a_change():
    """Features that jump inside long bouts (a real model's scores on a salad video jumped at 70 of
    105 boundaries in 7 bouts): a floor of 0.5 at every jump cut the video into 44 pieces. Where
    jumps outnumber the changes the bout length expects, the floor is the expected changes over the
    jumps (``scale_jumps``: segment-features' default, ``cluster.jump_scale``), and the two bouts
    come back whole; where jumps are rare, a jump keeps its full weight."""
    from handclust.core.clustering.temporal import JUMP_LEAVE, smooth_timelines

    rng = np.random.default_rng(5)
    n = 100  # one clip, 3 s segments: two bouts of 150 s, each flickering between two tight groups
    truth = np.repeat([0, 1], n // 2)
    activity = (2 * truth + rng.integers(0, 2, n)).astype(np.int32)
    centres = rng.normal(0, 1, (4, 16)) * 5.0
    fused = centres[activity] + rng.normal(0, 0.1, (n, 16))
    knn = np.stack([np.arange(n)] * 3, axis=1)  # each segment's own group votes
    cids = np.full(n, "clip", dtype=object)
    tl = smooth_timelines(activity, knn, cids, np.full(n, 3.0), 30.0, fused=fused, scale_jumps=True)
    assert tl.jumps is not None and tl.jumps > 0.3 * (n - 1)
    assert tl.jump_floor is not None and tl.jump_floor < JUMP_LEAVE
    assert tl.switches_after <= 0.2 * tl.switches_before, tl.reason
    assert "scaled to the changes the bout length expects" in tl.reason
    fixed = smooth_timelines(activity, knn, cids, np.full(n, 3.0), 30.0, fused=fused)  # footage's default: not scaled
    assert fixed.jump_floor == JUMP_LEAVE and fixed.switches_after > tl.switches_after
    # Rare jumps (bouts that each sit somewhere in their activity, a change now and then) keep the full floor.
    rare = np.repeat(np.arange(5) % 2, 20).astype(np.int32)
    bout_at = np.repeat(rng.normal(0, 1.0, (5, 16)), 20, axis=0)
    tl2 = smooth_timelines(rare, knn, cids, np.full(n, 3.0), 30.0, fused=centres[rare] + bout_at + rng.normal(0, 0.05, (n, 16)),
                           scale_jumps=True)
    assert tl2.jumps == 4 and tl2.jump_floor == JUMP_LEAVE
    assert tl2.switches_after == 4


def test_the_chance_of_a_change_at_a_jump_follows_what_the_timelines_show():
    """Rows that are each a whole action (a user's own segments: every boundary a jump and a change)
    against the 0.5 floor: the bout prior joined neighbouring actions that look alike. With
    ``learn_jumps`` (``cluster.jump_learn``, on in segment-features) the chance of a change at a jump is
    re-estimated from the decoded timelines, rises above 0.5 and keeps the changes; where jumps
    fall inside bouts it falls below the start instead."""
    from handclust.core.clustering.temporal import JUMP_LEARNED_MAX, JUMP_LEAVE, smooth_timelines

    rng = np.random.default_rng(3)
    n = 60  # one clip of 60 actions of 30 s each, cycling through 6 activities
    truth = (np.arange(n) % 6).astype(np.int32)
    centres = rng.normal(0, 1, (6, 16)) * 5.0
    fused = centres[truth] + rng.normal(0, 0.1, (n, 16))
    # One of every third row's neighbours votes for the action before it: too little evidence to pay
    # for a change where a jump is a 50:50 chance, enough where every jump has been a change.
    idx = np.arange(n)
    knn = np.stack([idx, idx, np.where(idx % 3 == 0, np.maximum(idx - 1, 0), idx)], axis=1)
    cids = np.full(n, "clip", dtype=object)
    fixed = smooth_timelines(truth, knn, cids, np.full(n, 30.0), 60.0, fused=fused)
    learned = smooth_timelines(truth, knn, cids, np.full(n, 30.0), 60.0, fused=fused, learn_jumps=True)
    assert fixed.jumps == n - 1 and fixed.jump_floor == JUMP_LEAVE
    assert learned.jump_floor is not None and JUMP_LEAVE < learned.jump_floor <= JUMP_LEARNED_MAX
    assert learned.switches_after > fixed.switches_after and learned.switches_after == n - 1, learned.reason
    assert "learned from the timelines' changes at jumps" in learned.reason
    # Jumps inside long bouts that the evidence keeps whole: the learned chance falls below the start.
    bouts = np.repeat([0, 1], n // 2).astype(np.int32)
    act = (2 * bouts + rng.integers(0, 2, n)).astype(np.int32)
    fused2 = (rng.normal(0, 1, (4, 16)) * 5.0)[act] + rng.normal(0, 0.1, (n, 16))
    votes = np.stack([np.arange(n)] + [np.clip(np.arange(n) + o, 0, n - 1) for o in (-2, -1, 1, 2)], axis=1)
    inside = smooth_timelines(act, votes, cids, np.full(n, 3.0), 30.0, fused=fused2, learn_jumps=True)
    assert inside.jumps is not None and inside.jumps > 10
    assert inside.jump_floor is not None and inside.jump_floor < JUMP_LEAVE, inside.reason
