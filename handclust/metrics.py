"""Agreement and consistency metrics: pure functions on label arrays."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, v_measure_score


def agreement(truth: npt.ArrayLike, pred: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> dict[str, float]:
    """ARI, NMI and V-measure of ``pred`` against ``truth``; integer ``weights`` repeat samples
    (e.g. segment durations in frames, so long segments count for more)."""
    t, p = np.asarray(truth), np.asarray(pred)
    if weights is not None:
        w = np.asarray(weights, np.int64)
        t, p = np.repeat(t, w), np.repeat(p, w)
    if len(t) == 0:
        return {"ari": float("nan"), "nmi": float("nan"), "v_measure": float("nan"), "n": 0}
    return {
        "ari": float(adjusted_rand_score(t, p)),
        "nmi": float(normalized_mutual_info_score(t, p)),
        "v_measure": float(v_measure_score(t, p)),
        "n": len(t),
    }


def clip_mixing(labels: npt.ArrayLike, clip_ids: npt.ArrayLike) -> dict[str, float]:
    """How much each cluster mixes clips.

    ``mixing_entropy``: size-weighted mean over clusters of H(p_clip) / log(clips in the cluster)
    (a cluster inside one clip scores 0); ``multi_clip_share``: share of clusters that span at
    least two clips. Noise (-1) is left out.
    """
    lab, cid = np.asarray(labels), np.asarray(clip_ids)
    keep = lab >= 0
    lab, cid = lab[keep], cid[keep]
    clusters = np.unique(lab)
    if len(clusters) == 0:
        return {"mixing_entropy": float("nan"), "multi_clip_share": float("nan"), "clusters": 0}
    ent, sizes, multi = [], [], 0
    for c in clusters:
        _, counts = np.unique(cid[lab == c], return_counts=True)
        sizes.append(counts.sum())
        if len(counts) < 2:
            ent.append(0.0)
            continue
        multi += 1
        p = counts / counts.sum()
        ent.append(float(-(p * np.log(p)).sum() / np.log(len(counts))))
    return {
        "mixing_entropy": float(np.average(ent, weights=sizes)),
        "multi_clip_share": multi / len(clusters),
        "clusters": len(clusters),
    }
