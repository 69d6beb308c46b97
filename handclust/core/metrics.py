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


# --------------------------------------------------------------------------- temporal action segmentation
# Definitions as in the temporal action segmentation literature (MS-TCN's eval.py; unsupervised
# work such as CTE / TOT / ASOT): clusters are matched to classes by the Hungarian method, then
# Mean over Frames (MoF), segmental F1@{10,25,50} and the Edit score are computed on the matched
# labels. All scores here are fractions in [0, 1] (papers print them x100).


def hungarian_match(truth: npt.ArrayLike, pred: npt.ArrayLike) -> dict[int, object]:
    """One-to-one map from predicted cluster ids to true classes maximising matched frames.

    Clusters left over when there are more clusters than classes map to nothing (their frames
    count as wrong), so over-segmentation is not rewarded.
    """
    from scipy.optimize import linear_sum_assignment

    t, p = np.asarray(truth), np.asarray(pred)
    classes, ti = np.unique(t, return_inverse=True)
    clusters, pi = np.unique(p, return_inverse=True)
    overlap = np.zeros((len(clusters), len(classes)), np.int64)
    np.add.at(overlap, (pi, ti), 1)
    rows, cols = linear_sum_assignment(-overlap)
    return {clusters.tolist()[r]: classes.tolist()[c] for r, c in zip(rows, cols)}


def apply_match(pred: npt.ArrayLike, match: dict[int, object], unmatched: object = None) -> npt.NDArray[np.object_]:
    return np.asarray([match.get(x, unmatched) for x in np.asarray(pred).tolist()], dtype=object)


def mof(truth: npt.ArrayLike, matched: npt.ArrayLike) -> float:
    """Mean over Frames: share of frames whose matched label equals the truth."""
    t, m = np.asarray(truth, dtype=object), np.asarray(matched, dtype=object)
    return float((t == m).mean()) if len(t) else float("nan")


def label_segments(labels: npt.ArrayLike) -> tuple[list[object], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Runs of equal labels: (label per run, start frame, end frame exclusive)."""
    x = np.asarray(labels, dtype=object)
    if len(x) == 0:
        return [], np.zeros(0, np.int64), np.zeros(0, np.int64)
    change = np.flatnonzero(x[1:] != x[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [len(x)]]).astype(np.int64)
    return [x[s] for s in starts], starts, ends


def edit_score(truth: npt.ArrayLike, matched: npt.ArrayLike) -> float:
    """1 - normalised Levenshtein distance between the sequences of segment labels."""
    a, _, _ = label_segments(matched)
    b, _, _ = label_segments(truth)
    if not a and not b:
        return 1.0
    d = np.zeros((len(a) + 1, len(b) + 1))
    d[:, 0] = np.arange(len(a) + 1)
    d[0, :] = np.arange(len(b) + 1)
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (a[i - 1] != b[j - 1]))
    return float(1.0 - d[-1, -1] / max(len(a), len(b)))


def f1_counts(truth: npt.ArrayLike, matched: npt.ArrayLike, overlap: float) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of predicted segments at IoU >= ``overlap``."""
    pl, ps, pe = label_segments(matched)
    tl, ts, te = label_segments(truth)
    hits = np.zeros(len(tl), bool)
    tp = fp = 0
    tl_arr = np.asarray(tl, dtype=object)
    for lab, s, e in zip(pl, ps, pe):
        inter = np.minimum(e, te) - np.maximum(s, ts)
        union = np.maximum(e, te) - np.minimum(s, ts)
        iou = np.where(tl_arr == lab, np.clip(inter, 0, None) / union, 0.0)
        j = int(iou.argmax()) if len(iou) else -1
        if j >= 0 and iou[j] >= overlap and not hits[j]:
            tp += 1
            hits[j] = True
        else:
            fp += 1
    return tp, fp, int(len(tl) - hits.sum())


def _f1(tp: int, fp: int, fn: int) -> float:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0


def _block(truth: npt.NDArray[np.object_], matched: npt.NDArray[np.object_], video: npt.NDArray[np.object_],
           overlaps: tuple[float, ...], pool_f1: bool) -> dict[str, float]:
    """MoF (frame-weighted), F1@k and Edit (mean over videos) of already matched labels.

    ``pool_f1`` pools the F1 counts over videos (MS-TCN's eval.py) instead of averaging per-video F1.
    """
    counts = {o: np.zeros(3, np.int64) for o in overlaps}
    f1s: dict[float, list[float]] = {o: [] for o in overlaps}
    edits = []
    for name in dict.fromkeys(video.tolist()):
        sel = video == name
        tv, mv = truth[sel], matched[sel]
        edits.append(edit_score(tv, mv))
        for o in overlaps:
            c = f1_counts(tv, mv, o)
            counts[o] += c
            f1s[o].append(_f1(*c))
    return {
        "mof": mof(truth, matched),
        **{f"f1@{round(o * 100)}": _f1(*counts[o]) if pool_f1 else float(np.mean(f1s[o])) for o in overlaps},
        "edit": float(np.mean(edits)),
    }


def segmentation_scores(truth: npt.ArrayLike, pred: npt.ArrayLike, video: npt.ArrayLike,
                        overlaps: tuple[float, ...] = (0.10, 0.25, 0.50)) -> dict[str, object]:
    """Frame-level truth and cluster ids of several videos (``video`` names each frame's video,
    frames in temporal order within a video) -> MoF, F1@k and Edit under two matching protocols,
    plus ARI and NMI.

    ``per_video``: each video's clusters are matched to its own labels (the protocol of the
    unsupervised action segmentation literature: CTE, TW-FINCH, ASOT); MoF is frame-weighted over
    all videos, F1@k and Edit are averaged over videos. It does not check that a cluster means the
    same action in every video.

    ``whole_set``: one matching of clusters to classes over all frames, as joint clustering means
    a cluster to be the same activity everywhere; a video whose clusters are swapped scores low.
    F1 pools its counts over videos (MS-TCN's eval.py), Edit is averaged over videos.

    ``videos`` has each video's frames and MoF under both protocols.
    """
    t = np.asarray(truth, dtype=object)
    p = np.asarray(pred)
    v = np.asarray(video, dtype=object)
    match = hungarian_match(t, p)
    matched = apply_match(p, match)
    own = np.empty(len(t), dtype=object)
    per_video = {}
    for name in dict.fromkeys(v.tolist()):
        sel = v == name
        own[sel] = apply_match(p[sel], hungarian_match(t[sel], p[sel]))
        per_video[str(name)] = {"frames": int(sel.sum()), "mof_per_video": mof(t[sel], own[sel]),
                                "mof_whole_set": mof(t[sel], matched[sel])}
    return {
        "per_video": {**_block(t, own, v, overlaps, pool_f1=False),
                      "matching": "each video's clusters matched to its own labels (Hungarian), scores averaged over videos"},
        "whole_set": {**_block(t, matched, v, overlaps, pool_f1=True),
                      "matching": "one Hungarian matching of clusters to classes over all videos",
                      "match": {str(k): str(val) for k, val in match.items()}},
        **agreement(t.astype(str), p),
        "classes": len(np.unique(t.astype(str))), "clusters": len(np.unique(p)),
        "videos": per_video,
    }
