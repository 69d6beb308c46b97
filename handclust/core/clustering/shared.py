"""Activities repeat across clips: a cluster found in one clip only, when others share theirs.

HDBSCAN on pooled descriptors finds dense groups, and the densest groups in a corpus are often one
clip's long stretch of one activity: many consecutive segments of one person doing one thing
their own way. On the synthetic feature sets where each person does each action their own way,
4 of 10 clusters sat inside a single video, each a person's version of an action that other
videos' clusters also hold (whole-set MoF 0.46 where a shared cluster per action gives 0.80).

So, with at least ``min_clips`` clips, a cluster whose segments all come from one clip joins the
cluster that most of its segments' nearest neighbours *in other clips* belong to. Two guards
keep what is really one clip's own:

- the vote must be a majority (``share`` of the cluster's segments point into one cluster);
- the segments must be about as close to other clips as the segments of shared clusters are:
  when the cluster's median nearest-other-clip similarity is below the ``floor`` quantile of the
  shared clusters' segments, the clip shows something no other clip does (a trade filmed once),
  and the cluster stays. On a set of four videos of one task and one of another, this kept the
  odd video's clusters apart about as often as no merging did (41-55 % of its frames in shared
  clusters, against 100 % when every single-clip cluster merged).

With fewer clips (two clips of two trades) every activity may be one clip's, and nothing merges.
Pure numpy; memory is bounded by comparing in chunks against at most ``POOL`` segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from handclust.core.clustering.neighbours import l2_normalise

POOL = 20_000  # other-clip candidates compared against (a random sample above this)
CHUNK = 2048


@dataclass
class SharedMerge:
    labels: npt.NDArray[np.int32]
    merged: dict[int, int]  # single-clip cluster -> the cluster it joined
    kept: int  # single-clip clusters left as they are
    reason: str


def _nearest_other_clip(x: npt.NDArray[np.float32], rows: npt.NDArray[np.int64], pool: npt.NDArray[np.int64],
                        clip_codes: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """For each of ``rows``: the most similar row of ``pool`` from another clip, and its cosine similarity."""
    idx = np.full(len(rows), -1, np.int64)
    sim = np.full(len(rows), -np.inf, np.float32)
    xp, cp = x[pool], clip_codes[pool]
    for a in range(0, len(rows), CHUNK):
        r = rows[a:a + CHUNK]
        s = x[r] @ xp.T
        s[clip_codes[r][:, None] == cp[None, :]] = -np.inf
        j = np.argmax(s, axis=1)
        idx[a:a + CHUNK] = pool[j]
        sim[a:a + CHUNK] = s[np.arange(len(r)), j]
    return idx, sim


def merge_single_clip_clusters(labels: npt.NDArray[np.int32], fused: npt.NDArray[np.floating],
                               clip_ids: npt.NDArray[np.object_], min_clips: int = 3, share: float = 0.5,
                               floor: float = 0.1, seed: int = 0) -> SharedMerge:
    """Merge clusters seen in one clip only into the shared cluster their other-clip neighbours vote for.

    ``labels`` are HDBSCAN's (-1 noise, untouched). Returns new labels (cluster ids are kept: a
    merged cluster takes its target's id) and what was merged.
    """
    labels = np.asarray(labels, np.int32).copy()
    _, clip_codes = np.unique(np.asarray(clip_ids, dtype=object).astype(str), return_inverse=True)
    n_clips = int(clip_codes.max()) + 1 if len(clip_codes) else 0
    if n_clips < min_clips:
        return SharedMerge(labels, {}, 0, f"{n_clips} clips (< {min_clips}): a cluster may be one clip's own; none merged")
    clusters = np.unique(labels[labels >= 0])
    spans = {int(c): len(np.unique(clip_codes[labels == c])) for c in clusters}
    single = [c for c in spans if spans[c] == 1]
    if not single:
        return SharedMerge(labels, {}, 0, "every cluster spans at least 2 clips")
    x = l2_normalise(np.asarray(fused, np.float32))
    n = len(x)
    rng = np.random.default_rng(seed)
    pool = np.sort(rng.choice(n, POOL, replace=False)) if n > POOL else np.arange(n)
    shared_rows = np.flatnonzero(np.isin(labels, [c for c in spans if spans[c] > 1]))
    if len(shared_rows) > POOL:
        shared_rows = np.sort(rng.choice(shared_rows, POOL, replace=False))
    single_rows = np.flatnonzero(np.isin(labels, single))
    nn_single, sim_single = _nearest_other_clip(x, single_rows, pool, clip_codes)
    ref = None
    if len(shared_rows):
        _, sim_shared = _nearest_other_clip(x, shared_rows, pool, clip_codes)
        ref = float(np.quantile(sim_shared, floor))
    nn = np.full(n, -1, np.int64)
    sim = np.full(n, -np.inf, np.float32)
    nn[single_rows], sim[single_rows] = nn_single, sim_single
    merged: dict[int, int] = {}
    kept = 0
    # Smallest first: a small private cluster joins before a bigger one is judged. Votes read the
    # current labels, so a cluster can join another single-clip cluster that has already merged,
    # or two clips' private versions of one activity can meet (the second then spans 2 clips).
    for c in sorted(single, key=lambda c: int((labels == c).sum())):
        rows = np.flatnonzero(labels == c)
        if len(np.unique(clip_codes[rows])) > 1:  # another cluster merged into it: shared now
            continue
        if ref is not None and float(np.median(sim[rows])) < ref:
            kept += 1
            continue
        votes = labels[nn[rows]]
        votes = votes[(votes >= 0) & (votes != c)]
        if len(votes) == 0:
            kept += 1
            continue
        vals, counts = np.unique(votes, return_counts=True)
        if counts.max() < share * len(rows):
            kept += 1
            continue
        target = int(vals[np.argmax(counts)])
        labels[rows] = target
        merged = {k: (target if v == c else v) for k, v in merged.items()}
        merged[int(c)] = target
    reason = (f"{len(single)} of {len(clusters)} clusters were inside one clip: {len(merged)} joined the cluster their "
              f"nearest segments in other clips vote for, {kept} kept as that clip's own")
    return SharedMerge(labels, merged, kept, reason)
