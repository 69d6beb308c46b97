"""A timeline per clip that follows the work, not the noise.

Clustering scores each segment on its own; nothing in it knows that an activity lasts. Here each
clip is an HMM over its segments: the hidden state is the activity, the evidence for a segment is
how its nearest neighbours' activities (and its own) vote, and a bout of one activity lasts an
exponentially distributed time with mean ``mean_run_s``, so leaving an activity after a segment of
``d`` seconds has probability ``1 - exp(-d / mean_run_s)``. Viterbi gives the most likely activity
sequence: a lone segment that looks like something else, amid a long bout, is absorbed unless its
evidence outweighs two switches; a run of several such segments stands. Where the features
themselves jump between two consecutive segments (:func:`feature_jumps`), a change is at least
as likely as not, whatever the bout length says, unless the features jump at more boundaries than
the bout length expects changes (then a jump is that much weaker evidence); how likely a change
at a jump is gets re-estimated from the decoded timelines (``learn_jumps``). Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse

F64 = npt.NDArray[np.float64]

# The re-estimated mean bout stays within [prior / BOUT_SHRINK, prior x BOUT_GROW] and below a quarter
# of the median clip: it may follow clear evidence of short bouts down (2 s bouts in a real desktop
# assembly video), but not grow to the clip's length.
BOUT_SHRINK = 8.0
BOUT_GROW = 2.0
# Where consecutive segments' features jump, the chance of leaving the bout is at least this: the
# features say the work changed, so the sticky prior must not overrule the evidence there. A floor,
# not a certain change: the evidence still decides. Chosen on the real label sequences' dev sets
# (benchmarks/real.py, with the jump test below): a floor of 0.5 gave dev F1@50 / Edit 0.795 / 0.768
# -> 0.804 / 0.779, while a uniform transition at jumps (the next activity independent of this one)
# gave 0.748 / 0.714.
JUMP_LEAVE = 0.5
# ... at most. With ``scale_jumps`` (cluster.jump_scale: on in segment-features, off for footage, where
# rendered footage lost held-out ARI 0.442 -> 0.405 with it): the floor is P(change | jump), and if
# every change shows as a jump, P(change | jump) =
# P(change) / P(jump): where the features jump at more boundaries than the bout length expects
# changes, each jump is weaker evidence, and the floor is the expected changes over the jumps. On a
# real model's scores (ASOT's Breakfast salad video: 7 bouts of 12-151 s in 6 minutes) the features
# jumped at 70 of 105 boundaries, and a floor of 0.5 at each cut the video into 44 segments (per-video
# F1@50 0.08); with the floor scaled to the expected changes, 20 segments and F1@50 0.15 (no floor at
# all: 9 segments, 0.38, but real IKEA segments lost up to 0.10 AMI and the two-task long clips
# 0.12 F1@50). The rendered label sequences jump less often than they change: unchanged there.
# With ``learn_jumps`` (cluster.jump_learn: on in segment-features, off for footage) the floor above is
# where the decoding starts, not a constant: after each decoding the chance of a change at a jump is
# re-estimated as the share of jumps the timelines changed at, with the starting floor counted as
# JUMP_PRIOR jumps (a Beta prior: a clip of a dozen jumps moves it little, a corpus of thousands
# follows its own evidence), at most JUMP_LEARNED_MAX so that a jump never forces a change against
# the evidence. Measured (benchmarks/real.py): real IKEA frames through segment-features AMI up on 9
# of 10 models (largest shortfall to k-means at the same K 0.031 -> 0.021); real IKEA segments
# through the core with it on, up on 10 of 10 (0.016 -> 0.011); real label sequences held out F1@50
# 0.747 -> 0.755, the slow variant and the salad scores within 0.005. Rendered footage (synthetic):
# held-out ARI 0.442 -> 0.458, but on the demo's seed scene alone rose above the fused run (0.506
# against 0.464), so footage keeps the fixed floor.
JUMP_PRIOR = 10.0
JUMP_LEARNED_MAX = 0.95
_CHUNK = 65536  # rows per block when measuring distances: bounded memory at millions of segments


def neighbour_evidence(labels: npt.NDArray[np.int32], knn_idx: npt.NDArray[np.int64], clusters: npt.NDArray[np.int32],
                       own_votes: float = 2.0, pseudo: float = 1.0) -> F64:
    """``(n, K)`` probability of each cluster per segment: votes of its kNN neighbours' clusters,
    its own cluster counted ``own_votes`` times, and ``pseudo`` votes spread evenly over all clusters
    (Laplace), so a noise segment among noise neighbours is near-uniform and the timeline around it
    decides, while the evidence of a clear segment does not weaken as the number of clusters grows."""
    n, k_clusters = len(labels), len(clusters)
    pos = {int(c): i for i, c in enumerate(clusters.tolist())}
    col = np.array([pos.get(int(v), -1) for v in labels.tolist()], np.int64) if n else np.zeros(0, np.int64)
    votes = np.full((n, k_clusters), pseudo / max(k_clusters, 1), np.float64)
    if knn_idx.size:
        nb = col[knn_idx]  # (n, k) column of each neighbour's cluster, -1 for noise
        for j in range(nb.shape[1]):
            ok = nb[:, j] >= 0
            np.add.at(votes, (np.flatnonzero(ok), nb[ok, j]), 1.0)
    own = col >= 0
    votes[np.flatnonzero(own), col[own]] += own_votes
    return votes / votes.sum(axis=1, keepdims=True)


def viterbi(log_emit: F64, log_stay: F64, log_switch: F64) -> npt.NDArray[np.int64]:
    """Most likely state path of one sequence. ``log_emit`` ``(n, K)``; ``log_stay`` / ``log_switch``
    ``(n,)``: log-probability, on leaving step ``i``, of keeping the state / of moving to one given
    other state. O(n K): the best "other" predecessor is the best or the second best state."""
    n, k = log_emit.shape
    if n == 0:
        return np.zeros(0, np.int64)
    if k == 1:
        return np.zeros(n, np.int64)
    back = np.zeros((n, k), np.int64)
    delta = log_emit[0].copy()
    states = np.arange(k)
    for i in range(1, n):
        order = np.argsort(delta)[::-1]
        b1, b2 = order[0], order[1]
        other = np.where(states == b1, b2, b1)
        stay = delta + log_stay[i - 1]
        move = delta[other] + log_switch[i - 1]
        take_move = move > stay
        back[i] = np.where(take_move, other, states)
        delta = np.where(take_move, move, stay) + log_emit[i]
    path = np.zeros(n, np.int64)
    path[-1] = int(np.argmax(delta))
    for i in range(n - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return path


def feature_jumps(fused: npt.NDArray[np.floating], activity: npt.NDArray[np.int32], first: npt.NDArray[np.int64],
                  second: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """``(m,)`` whether the features jump between each pair ``first[j]``, ``second[j]`` (consecutive
    segments of a clip): their squared distance in the fused space exceeds the sum of the mean
    squared radii (distance to the centroid) of their two activities, that is, they are farther apart
    than two typical members of their activities are. Scale-free: it compares the data with itself,
    and does not depend on how many segments the corpus holds (a kNN-list test would: the more
    segments, the more of them crowd a segment's ten nearest ahead of its clip's next segment; argued,
    not measured at scale). Rows without an activity
    (-1) take the median radius. ``fused`` ``(n, d)``."""
    n = len(activity)
    if len(first) == 0 or n == 0:
        return np.zeros(len(first), bool)
    has = activity >= 0
    ids, col = np.unique(activity[has], return_inverse=True)
    if len(ids) == 0:
        return np.zeros(len(first), bool)
    k = len(ids)
    sums = np.zeros((k, fused.shape[1]), np.float64)
    sq = np.zeros(k, np.float64)
    rows = np.flatnonzero(has)
    for s in range(0, len(rows), _CHUNK):  # per-cluster sums of x and of |x|^2, a block of rows at a time
        xb = np.asarray(fused[rows[s:s + _CHUNK]], np.float64)
        c = col[s:s + _CHUNK]
        member = sparse.csr_matrix((np.ones(len(c)), (c, np.arange(len(c)))), shape=(k, len(c)))
        sums += member @ xb
        sq += np.bincount(c, weights=np.einsum("ij,ij->i", xb, xb), minlength=k)
    count = np.bincount(col, minlength=k).astype(np.float64)
    centre = sums / count[:, None]
    radius2 = np.maximum(sq / count - np.einsum("ij,ij->i", centre, centre), 0.0)  # mean squared distance to the centroid
    r2 = np.full(n, float(np.median(radius2)), np.float64)
    r2[rows] = radius2[col]
    jump = np.zeros(len(first), bool)
    for s in range(0, len(first), _CHUNK):
        a, b = first[s:s + _CHUNK], second[s:s + _CHUNK]
        diff = np.asarray(fused[a], np.float64) - np.asarray(fused[b], np.float64)
        jump[s:s + _CHUNK] = np.einsum("ij,ij->i", diff, diff) > r2[a] + r2[b]
    return jump


@dataclass
class Timelines:
    activity: npt.NDArray[np.int32]  # (n,) smoothed activity per segment
    switches_before: int  # activity changes within clips before the temporal model
    switches_after: int
    reason: str
    run_s: float | None = None  # the mean bout the decoding ended with (None: nothing was smoothed)
    boundaries: int = 0  # consecutive pairs of segments within clips
    jumps: int | None = None  # of those, where the features jump (None: fused vectors not given)
    jump_floor: float | None = None  # the chance of a change at a jump the decoding ended with


def smooth_timelines(activity: npt.NDArray[np.int32], knn_idx: npt.NDArray[np.int64],
                     clip_ids: npt.NDArray[np.object_], durations_s: npt.NDArray[np.floating], mean_run_s: float,
                     max_iter: int = 5, fused: npt.NDArray[np.floating] | None = None, scale_jumps: bool = False,
                     learn_jumps: bool = False) -> Timelines:
    """Per clip (rows of a clip in time order), the Viterbi activity path over neighbour evidence.

    ``activity`` is the per-segment activity without the temporal model (noise already given its
    nearest cluster, k-means refinement applied; -1 where a segment has none): the evidence and
    the before/after counts. The evidence is the activity the user would see without the temporal
    model, not HDBSCAN's raw labels: with the raw labels every noise segment (20-67 % of real
    segments) and every noise neighbour voted for nothing, so the timeline around it decided alone.
    On the real sets (benchmarks/real.py) this moved label sequences dev MoF / F1@50 0.856 / 0.749
    -> 0.871 / 0.764 (held-out 0.828 / 0.628 -> 0.830 / 0.633), the real model scores 0.386 ->
    0.412, and IKEA AMI up on all 10 models (0.127 -> 0.162 on c3d).

    ``fused`` ``(n, d)``, the vectors that were clustered: where given, the chance of leaving a
    bout is at least ``JUMP_LEAVE`` at each boundary where the features jump (:func:`feature_jumps`),
    or (``scale_jumps``) the expected number of changes over the number of jumps where jumps are the more;
    ``learn_jumps``: that floor is the prior, re-estimated after each decoding from the share of jumps
    the timelines changed at (:data:`JUMP_PRIOR`).
    The bout prior alone cannot tell a boundary inside a bout from one between two actions; without
    this, on real IKEA segments (each row a whole action, so every boundary is a change) the model
    joined neighbouring actions and cost 0.07-0.10 AMI against k-means at the same K.
    """
    clip_ids = np.asarray(clip_ids, dtype=object)
    clusters = np.unique(activity[activity >= 0]).astype(np.int32)
    # Rows grouped by clip with one stable sort (not a pass over all rows per clip: 100k clips at scale).
    _, inv = np.unique(clip_ids, return_inverse=True)
    inv = np.ravel(inv)
    order = np.argsort(inv, kind="stable")
    groups = np.split(order, np.cumsum(np.bincount(inv))[:-1]) if len(inv) else []
    same_clip = inv[order][1:] == inv[order][:-1]

    def changes(a: npt.NDArray[np.int32]) -> int:
        s = a[order]
        return int(((s[1:] != s[:-1]) & same_clip).sum())

    before = changes(activity)
    if len(clusters) < 2:
        return Timelines(activity.copy(), before, before, "fewer than 2 activities: nothing to smooth")
    p = neighbour_evidence(activity, knn_idx, clusters)
    log_emit = np.log(p)
    d = np.maximum(np.asarray(durations_s, np.float64), 1e-3)
    total_s = float(d.sum())
    # The bout length follows the evidence inside clips, within bounds: on real label sequences
    # (Breakfast, 50Salads, a drilling rig: benchmarks/real.py) bouts last 8-17 s at the median and
    # 10-36 s on average, in clips of 45-470 s with 4.6-30 bouts each. Unbounded, hard EM let a
    # clip of few clear changes re-estimate the bout to the clip's length (404 s on 7 min of
    # helmet footage), and then nothing inside the clip could change. So the estimate stays within
    # [prior / BOUT_SHRINK, prior x BOUT_GROW] and below a quarter of the median clip.
    clip_s = np.asarray([float(d[rows].sum()) for rows in groups])
    hi = max(mean_run_s / BOUT_SHRINK, min(mean_run_s * BOUT_GROW, float(np.median(clip_s)) / 4))
    lo = min(mean_run_s / BOUT_SHRINK, hi)
    run_s = float(np.clip(mean_run_s, lo, hi))
    jump = np.zeros(len(d), bool)  # jump[i]: the features jump between row i and the next row of its clip
    has_next = np.zeros(len(d), bool)  # rows followed by another row of their clip
    first = second = np.zeros(0, np.int64)
    if len(order) > 1:
        first, second = order[:-1][same_clip], order[1:][same_clip]
        has_next[first] = True
        if fused is not None:
            jump[first] = feature_jumps(fused, activity, first, second)
    n_jumps = int(jump.sum())
    jump_first = first[jump[first]]  # rows followed by a jump (rows of ``first``, so their next row is in ``second``)
    jump_second = second[jump[first]]
    floor = prior = JUMP_LEAVE
    learned: float | None = None
    out = activity.copy()
    # Hard EM on the free parameters (the mean bout length; with ``learn_jumps`` the chance of a change
    # at a jump too): decode with the current values, re-estimate them from the decoded timelines, and
    # repeat. The prior ``mean_run_s`` is where it starts, not a fixed cost: footage whose activities
    # really change every few seconds, with clear evidence, ends with a shorter bout length than
    # footage whose clusters merely flicker.
    for _ in range(max_iter):
        leave = -np.expm1(-d / run_s)  # P(the bout ends during this segment)
        if n_jumps and scale_jumps and learned is None:  # P(change | jump) = P(change) / P(jump), at most JUMP_LEAVE
            floor = prior = min(JUMP_LEAVE, float(leave[has_next].sum()) / n_jumps)
        if learned is not None:
            floor = learned
        leave = np.where(jump, np.maximum(leave, floor), leave)
        log_stay = np.log1p(-leave)
        log_switch = np.log(leave / (len(clusters) - 1))
        for rows in groups:
            out[rows] = clusters[viterbi(log_emit[rows], log_stay[rows], log_switch[rows])]
        new_run = float(np.clip(total_s / (changes(out) + len(groups)), lo, hi))
        settled = abs(new_run - run_s) < 0.05 * run_s
        if learn_jumps and n_jumps:
            changed = int((out[jump_first] != out[jump_second]).sum())
            learned = min(JUMP_LEARNED_MAX, (changed + JUMP_PRIOR * prior) / (n_jumps + JUMP_PRIOR))
            settled = settled and abs(learned - floor) < 0.02
        run_s = new_run
        if settled:
            break
    after = changes(out)
    n_bounds = int(same_clip.sum())
    how = (f"learned from the timelines' changes at jumps, starting from {prior:.2g}" if learned is not None
           else f"{JUMP_LEAVE:g} scaled to the changes the bout length expects" if floor < JUMP_LEAVE else "")
    jumps = (f"; features jump at {n_jumps} of {n_bounds} boundaries (a change there at least {floor:.2g} likely"
             + (f": {how}" if how else "") + ")" if fused is not None else "")
    reason = (f"HMM per clip over kNN cluster votes, exponential bouts starting from a mean of {mean_run_s:g} s and "
              f"re-estimated to {run_s:.1f} s (bounds {lo:.1f}-{hi:.1f} s): {before} -> {after} activity changes within clips{jumps}")
    return Timelines(out.astype(np.int32), before, after, reason, run_s, n_bounds, n_jumps if fused is not None else None,
                     floor if fused is not None else None)
