"""Precomputed per-frame features in, per-frame cluster ids out.

Reads the layout the temporal action segmentation data sets use (Breakfast, 50Salads, GTEA as
distributed with MS-TCN / ASFormer)::

    DIR/features/<task>/<video>.npy | .txt   one row (or column) of features per frame; tasks as
    DIR/features/<video>.npy | .txt          subfolders, or all videos directly in features/
    DIR/groundTruth[/<task>]/<video>[.txt]   optional: one label per line, one line per frame
    DIR/mapping/mapping.txt | DIR/mapping.txt  optional: "<id> <label>" per line

and runs the video pipeline's segmentation and joint clustering on them: each video is cut by
the appearance and statistical detectors (the motion detector watches how fast the features
change, since there is no optical flow), each segment is described by its pooled features, and
all segments of all videos are clustered together. Writes ``OUT/<video>.txt`` with one integer
cluster id per frame and, when ground truth is there, ``OUT/eval.json`` with MoF, F1@k and Edit
under per-video and whole-set matching, ARI and NMI.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from handclust.config import RunConfig, config_to_dict, load_config
from handclust.core.clustering import fuse, group_segments
from handclust.core.clustering.fusion import clip_codes
from handclust.core.clustering.shared import clip_groups, folder_groups
from handclust.core.metrics import segmentation_scores
from handclust.core.segmentation import segment_clip
from handclust.errors import FeatureDirError as FeatureDirError  # defined with every error in handclust/errors.py
from handclust.io import layout as run_layout

log = logging.getLogger(__name__)

Layout = Literal["auto", "frames-first", "features-first"]


# Precomputed features are clustered in short units (at most 4 s, at least 1 s): a unit must be
# shorter than the shortest action to stay pure, and the temporal model joins units into actions.
# On the synthetic feature sets (seeds 0-2) units of 3-15 s gave per-video MoF 0.51, 1-4 s 0.91.
# Scripted-task sets (every video performs the same task) expect each action in most videos, so a
# cluster inside one video is that person's version of a shared action: merged (clustering/shared.py;
# whole-set MoF 0.46 -> 0.74 on the person-style synthetic sets). Footage clips hold different
# subsets of the work, so the video default leaves it off.
# The CLI applies these before the user's --config / --set; segment_features(config=None) too.
# The features are one embedding whose dims share a unit (in the literature's sets, principal
# components of Fisher vectors or I3D): scaled as a whole, not column by column (see
# clustering.fusion.fit_modality; per-video MoF 0.63 -> 0.75 on benchmarks/footage_features.py's
# dev sets). Hand-made per-frame descriptors in mixed units want --set cluster.scaling.features=columns.
# Relative time within each video is on for scripted tasks (TIME_WEIGHT): every method of this
# literature uses it (TW-FINCH's temporal weighting, CTE's time embedding, ASOT's temporal prior),
# and on the held-back real scripted set it moved HandClust past TW-FINCH. The weight was chosen on
# real label sequences (benchmarks/real.py): on features rendered along 8 Breakfast dev sets,
# 0 / 0.1 / 0.25 / 0.5 gave per-video MoF 0.854 / 0.869 / 0.837 / 0.778; on a real model's scores
# (ASOT's Breakfast salad video) 0.589 / 0.669 / 0.582 / 0.522.
TIME_WEIGHT = 0.1
# ... but only where the data has an order: with each video doing the actions in its own random order,
# time at 0.1 split an action by when it happened (per-video MoF 0.97 -> 0.81 on tests' planted set).
# So the activities are first found without time, and time joins when where they happen in the videos
# is more consistent than the same bouts in a shuffled order would be (:func:`time_order`).
ORDER_MIN = 0.95  # the share of shuffles the observed order must beat: a 5 % false-positive rate on videos of no order
ORDER_SHUFFLES = 100
# The test needs bouts to shuffle: with 2 activities found (a real pancake task, where frying fills
# 6 of 9 minutes), each video is 3 bouts, few orders exist, and a real order beat 90 % of shuffles,
# never 95 %. Below ORDER_K activities the order is tested on ORDER_K k-means groups of the segments
# instead (finer than the activities, so more bouts; time is still not a feature there). On the
# real label sequences (benchmarks/real.py, one set per Breakfast task): dev per-video MoF / F1@50
# 0.812 / 0.732 -> 0.818 / 0.750 (6 and 12 groups: unchanged), held out 0.865 / 0.685 -> 0.897 /
# 0.781 (pancake 0.744 / 0.208 -> 0.907 / 0.688: time joined and 8 activities were found, not 2).
ORDER_K = 8


def _eta_squared(rel: npt.NDArray[np.float64], inv: npt.NDArray[np.int64], w: npt.NDArray[np.float64]) -> float:
    mean = np.average(rel, weights=w)
    total = float(np.sum(w * (rel - mean) ** 2))
    if total <= 1e-12:
        return 0.0
    sw = np.bincount(inv, weights=w)
    cm = np.bincount(inv, weights=w * rel) / np.maximum(sw, 1e-12)
    return float(np.sum(sw * (cm - mean) ** 2)) / total


def time_order(labels: npt.NDArray[np.integer], durations: npt.NDArray[np.floating], video: npt.NDArray[np.object_],
               seed: int = 0, shuffles: int = ORDER_SHUFFLES) -> tuple[float, float]:
    """Is there a typical order? The correlation ratio (eta squared) of each segment's relative time
    within its video by activity, and the share of shuffles it beats: in each shuffle, every video's
    bouts (runs of one activity) keep their lengths and move to a random order. Rows of a video in
    time order. Returns ``(eta2, share)``; a share near 1: the activities keep their place in the
    videos (a scripted task); near 0.5: no more than chance."""
    lab = np.asarray(labels)
    d = np.maximum(np.asarray(durations, np.float64), 1e-9)
    video = np.asarray(video, dtype=object)
    _, inv = np.unique(lab, return_inverse=True)
    rng = np.random.default_rng(seed)
    bouts = []  # per video: (activity index of each bout, duration of each bout)
    for v in dict.fromkeys(video.tolist()):
        rows = np.flatnonzero(video == v)
        a, dv = inv[rows], d[rows]
        start = np.r_[0, np.flatnonzero(a[1:] != a[:-1]) + 1]
        bouts.append((a[start], np.add.reduceat(dv, start)))

    def eta(order: list[npt.NDArray[np.int64]]) -> float:
        rel, acts, w = [], [], []
        for (a, dv), o in zip(bouts, order):
            dv, a = dv[o], a[o]
            ends = np.cumsum(dv)
            rel.append((ends - dv / 2) / ends[-1])
            acts.append(a)
            w.append(dv)
        return _eta_squared(np.concatenate(rel), np.concatenate(acts), np.concatenate(w))

    if len(np.unique(inv)) < 2:
        return 0.0, 0.0
    observed = eta([np.arange(len(a)) for a, _ in bouts])
    null = np.asarray([eta([rng.permutation(len(a)) for a, _ in bouts]) for _ in range(shuffles)])
    return observed, float((observed > null).mean())
# cluster.size_scale=0.35: on the real label sequences' dev tasks (benchmarks/real.py) K found was
# below the truth on most sets (2 for 11 on a held-out task), and a smaller min_cluster_size gave
# per-video F1@50 0.764 -> 0.795 and Edit 0.723 -> 0.768 for MoF 0.871 -> 0.858 and whole-set MoF
# 0.838 -> 0.778. Per-video segmentation is what scripted-task sets are judged on; footage keeps 0.5.
# segment.place=change: units start where the features change most (handclust/core/segmentation.py).
# Real IKEA frames: unit boundaries on the true ones 459 -> 1,487 of 2,557 (c3d); real label
# sequences dev / held-out per-video MoF 0.863 / 0.879 -> 0.920 / 0.886 (and up on two more
# rendering seeds, slow variant included). Footage keeps "even" (sample footage ARI 0.44 -> 0.38).
# cluster.jump_scale=true: where the features jump at more boundaries than the bout length expects
# changes, a jump is weaker evidence (clustering/temporal.py). A real model's scores (ASOT's salad
# video) 44 -> 20 segments for 7 bouts, F1@50 0.08 -> 0.15; the real label sequences unchanged.
# Footage keeps it off: rendered footage (3-15 s segments, most boundaries real changes) lost
# held-out ARI 0.442 -> 0.405.
# cluster.jump_learn=true: the chance of a change at a jump re-estimated from the decoded timelines
# (clustering/temporal.py). Real IKEA frames AMI up on 9 of 10 models (largest shortfall to k-means
# at the same K 0.031 -> 0.021), real label sequences held out F1@50 0.747 -> 0.755, the salad
# scores unchanged. Footage keeps it off: on the demo's rendered footage (seed 0) scene alone rose
# above the fused run with it (0.506 against 0.464), though the held-out seeds rose 0.442 -> 0.458.
# cluster.mean_run_s=60: the temporal model's starting bout length, clipped to a quarter of the
# median clip (clustering/temporal.py). Where the evidence is weak, hard EM has more than one
# self-consistent answer and the start picks one. On the real salad scores (one video of
# 353 s, 7 bouts of 12-151 s) the decodings from 30 s and 60 s settled at bouts of 17.6 s and 39.2 s
# with log-likelihoods -170.2 and -171.0: 20 and 9 segments, MoF / F1@50 0.556 / 0.148 and 0.618 /
# 0.375. The real label sequences (plain and slow, dev and held out), two_levels, IKEA frames and the
# synthetic feature sets are identical with 60 s; the salad video is the only set it moves, so it was
# chosen there (benchmarks/real.py; docs/results.md). Footage keeps 30 s.
# segment.context_frames=4: units of fewer than 4 frames (a frame every 2 s: 1-2) are clustered beside
# the mean of their neighbours in time (with_context). Real label sequences sampled every 2 s
# (real.py sparse): held-out AMI 0.612 -> 0.669, weak features 0.245 -> 0.316; at 15 and 5 fps identical.
FEATURE_DEFAULTS = ("segment.min_segment_s=1", "segment.max_segment_s=4", "segment.place=change", "segment.context_frames=4",
                    "cluster.merge_single_clip=true",
                    "cluster.scaling.features=whole", "cluster.size_scale=0.35", "cluster.jump_scale=true",
                    "cluster.jump_learn=true", "cluster.mean_run_s=60")

# Real releases sometimes have a frame or two more features than labels (or fewer); more than
# this is a different video, frame rate or orientation, and trimming would hide it.
FRAME_SLACK = 2


@dataclass
class FeatureVideo:
    name: str  # unique in the set: "<task>_<video>" when two tasks share a video name
    features: npt.NDArray[np.float32]  # (n_frames, dim)
    truth: list[str] | None  # one label per frame
    task: str | None = None  # the features/<task>/ subfolder, None for the flat layout


def _load_array(path: Path) -> npt.NDArray[np.float32]:
    try:
        x = np.load(path, allow_pickle=False) if path.suffix == ".npy" else np.loadtxt(path, ndmin=2)
    except Exception as exc:
        raise FeatureDirError(f"{path}: cannot read features ({type(exc).__name__}: {exc}); "
                              "expected a 2-D .npy array or a whitespace-separated .txt matrix") from exc
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or min(x.shape) == 0:
        raise FeatureDirError(f"{path}: features must be a non-empty 2-D array (frames x dims), got shape {x.shape}")
    return x


def _orient(x: npt.NDArray[np.float32], n_truth: int | None, layout: Layout, path: Path) -> npt.NDArray[np.float32]:
    """``(n_frames, dim)`` whichever way round the file stores it."""
    if layout == "frames-first":
        return x
    if layout == "features-first":
        return x.T.copy()
    if n_truth is not None:
        # Take the axis nearer the label count; _check_frames rejects both if neither is near.
        return x if abs(x.shape[0] - n_truth) <= abs(x.shape[1] - n_truth) else x.T.copy()
    # Without labels: feature dims (64-2048) are usually fewer than frames. Say what was assumed.
    if x.shape[1] > x.shape[0]:
        log.info("%s: read as %d frames x %d dims (columns are frames); pass --layout to force", path.name, x.shape[1], x.shape[0])
        return x.T.copy()
    return x


def _check_frames(x: npt.NDArray[np.float32], stored: tuple[int, ...], truth: list[str], layout: Layout,
                  path: Path, truth_path: Path) -> tuple[npt.NDArray[np.float32], list[str]]:
    """Trim a mismatch of up to FRAME_SLACK frames (with a note); refuse a larger one, naming the fix."""
    n, m = len(x), len(truth)
    if n == m:
        return x, truth
    if abs(n - m) <= FRAME_SLACK:
        k = min(n, m)
        log.info("%s: %d feature frames but %d labels in %s; using the first %d of both", path.name, n, m, truth_path.name, k)
        return x[:k], truth[:k]
    read_as = f"read as {n} frames x {x.shape[1]} dims" + (f" (--layout {layout})" if layout != "auto" else "")
    if abs(x.shape[1] - m) <= FRAME_SLACK:
        other = "features-first" if x.shape == stored else "frames-first"
        fix = f"its other axis has {x.shape[1]} entries, so pass --layout {other}"
    else:
        fix = ("neither axis matches the labels: check that the feature file and the label file are the same video "
               "at the same frame rate (features subsampled or labels at another rate?)")
    raise FeatureDirError(f"{path}: features of shape {stored} {read_as}, but {truth_path} has {m} labels "
                          f"(shape ({m},)); more than {FRAME_SLACK} frames apart: {fix}")


def _feature_files(fdir: Path) -> list[tuple[str | None, Path]]:
    """(task, file) for features/<video>.* and features/<task>/<video>.*, sorted."""
    out: list[tuple[str | None, Path]] = []
    for p in sorted(fdir.iterdir()):
        if p.is_file() and p.suffix in (".npy", ".txt"):
            out.append((None, p))
        elif p.is_dir():
            out += [(p.name, q) for q in sorted(p.iterdir()) if q.is_file() and q.suffix in (".npy", ".txt")]
    return out


def _truth_file(gt_dir: Path, task: str | None, stem: str) -> Path | None:
    folders = ([gt_dir / task] if task else []) + [gt_dir]
    for folder in folders:
        for cand in (folder / f"{stem}.txt", folder / stem):
            if cand.is_file():
                return cand
    return None


def load_feature_dir(root: str | Path, layout: Layout = "auto") -> list[FeatureVideo]:
    """Every video under ``root/features`` (flat or one subfolder per task) with its labels if any.

    Raises FeatureDirError (naming the file and the fix) for a missing folder, an unreadable
    file, or feature frames and labels more than FRAME_SLACK apart.
    """
    root = Path(root)
    fdir = root / "features"
    if not fdir.is_dir():
        raise FeatureDirError(f"{root}: no features/ folder; expected {root}/features/<video>.npy or .txt "
                              f"or {root}/features/<task>/<video>.npy or .txt (one row of features per frame)")
    files = _feature_files(fdir)
    if not files:
        raise FeatureDirError(f"{fdir}: no .npy or .txt feature files (in it or in one subfolder per task)")
    stems: dict[str, int] = {}
    for _, path in files:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    gt_dir = root / "groundTruth"
    videos: list[FeatureVideo] = []
    names: dict[str, Path] = {}
    for task, path in files:
        name = f"{task}_{path.stem}" if task and stems[path.stem] > 1 else path.stem
        if name in names:
            raise FeatureDirError(f"{path}: video name {name!r} is also used by {names[name]}; rename one of them")
        names[name] = path
        truth_path = _truth_file(gt_dir, task, path.stem)
        truth = None
        if truth_path is not None:
            truth = [ln.strip() for ln in truth_path.read_text().splitlines() if ln.strip()]
        stored = _load_array(path)
        x = _orient(stored, len(truth) if truth else None, layout, path)
        if truth is not None and truth_path is not None:
            x, truth = _check_frames(x, stored.shape, truth, layout, path, truth_path)
        videos.append(FeatureVideo(name, x, truth, task))
    return videos


def read_mapping(root: str | Path) -> dict[str, int]:
    """``mapping/mapping.txt`` or ``mapping.txt`` ("<id> <label>" per line) as label -> id, or {} when absent."""
    root = Path(root)
    p = next((c for c in (root / "mapping" / "mapping.txt", root / "mapping.txt") if c.is_file()), None)
    if p is None:
        return {}
    out = {}
    for line in p.read_text().splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) == 2:
            out[parts[1].strip()] = int(parts[0])
    return out


def _feature_speed(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``(n, 1)``: how fast the (standardised) features change, the motion detector's signal here."""
    z = (x - x.mean(0)) / (x.std(0) + 1e-6)
    d = np.r_[0.0, np.linalg.norm(np.diff(z, axis=0), axis=1)]
    return np.log1p(d)[:, None]


def context_units(unit_frames: npt.NDArray[np.integer], target: int) -> int:
    """Units on each side that bring a unit's window to ``target`` frames, from the median unit's
    frames: 0 where units already hold that many (15 fps features: units of 15-60 frames; at 5 fps,
    5-20), 1 for units of 1-2 frames at a frame every 2 s."""
    if target <= 0 or not len(unit_frames):
        return 0
    med = float(np.median(unit_frames))
    return 0 if med >= target else int(np.ceil((target / max(med, 1.0) - 1) / 2))


def with_context(desc: npt.NDArray[np.floating], video: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.float64]:
    """``(rows, 2 d)``: each unit's own mean beside the mean of its own and the ``n`` units on each side
    of it in its video (fewer at a video's ends; never another video's); ``desc`` itself where ``n`` is 0.
    Rows of a video must be in time order.

    A unit of one to a few frames is a noisy description of what happens there; its neighbours in
    time mostly hold the same action, so their mean is a steadier one, and the unit's own mean beside
    it keeps where the action changes. Real label sequences (benchmarks/real.py): sampled every 2 s as
    helmet footage was (`sparse`, units of 1-2 frames), held-out AMI 0.612 -> 0.669 and, with weak
    features, 0.245 -> 0.316 (dev 0.533 -> 0.547 and 0.189 -> 0.262).
    """
    desc = np.asarray(desc, np.float64)
    if n <= 0 or not len(desc):
        return desc
    ctx = np.empty_like(desc)
    # Rows grouped by video with one stable sort (not a pass over all rows per video: thousands of videos).
    order = np.argsort(video, kind="stable")
    for rows in np.split(order, np.flatnonzero(np.diff(video[order])) + 1):
        csum = np.vstack([np.zeros((1, desc.shape[1])), np.cumsum(desc[rows], axis=0)])
        i = np.arange(len(rows))
        lo, hi = np.maximum(i - n, 0), np.minimum(i + n + 1, len(rows))
        ctx[rows] = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
    return np.hstack([desc, ctx])


def segment_features(root: str | Path, out: str | Path, fps: float, config: RunConfig | None = None,
                     n_clusters: int | None = None, layout: Layout = "auto", time_weight: float | None = None,
                     split_groups: bool | None = None) -> dict[str, Any]:
    """Segment and jointly cluster every video under ``root``; write per-frame ids to ``out``.

    ``config`` defaults to the video defaults with FEATURE_DEFAULTS (what the CLI uses).
    ``fps`` is the features' frame rate, so ``segment.min_segment_s`` etc. mean what they mean for
    video. ``n_clusters`` fixes the number of clusters (k-means on the fused segment
    descriptors) for comparison with methods given k; by default HDBSCAN finds it.
    ``time_weight`` > 0 adds each segment's relative time within its video as a fused feature of
    that weight; 0 leaves it out; None (default): :data:`TIME_WEIGHT` when the activities found
    without time keep an order across videos (:func:`time_order` >= :data:`ORDER_MIN`: a scripted
    task), else left out (videos in no typical order, or cut from longer recordings).
    ``split_groups``: videos that come in groups (their mean features part clearly:
    :func:`handclust.core.clustering.shared.clip_groups`) are clustered one group at a time, their
    activities numbered apart (``eval.json`` ``video_groups``); False: all together; None:
    ``cluster.split_groups`` (on).
    Returns the evaluation (also written to ``out/eval.json``).
    """
    cfg = config if config is not None else load_config(None, list(FEATURE_DEFAULTS))
    split_groups = cfg.cluster.split_groups if split_groups is None else split_groups
    # The videos are parted here, on their raw features, and each group's discovery (time decided
    # per group) clusters that group alone: group_segments must not part it again.
    one_group = cfg.cluster.model_copy(update={"split_groups": False})
    videos = load_feature_dir(root, layout)
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    seg_rows: list[tuple[int, int, int]] = []  # (video index, start, end)
    desc = []
    for vi, v in enumerate(videos):
        x = np.nan_to_num(v.features.astype(np.float64))
        seg = segment_clip(_feature_speed(x), x, fps, cfg.segment)
        for a, b in zip(seg.starts.tolist(), seg.ends.tolist()):
            seg_rows.append((vi, a, b))
            desc.append(x[a:b].mean(0))
    clip_ids = np.asarray([videos[vi].name for vi, _, _ in seg_rows], dtype=object)
    durations = np.asarray([(b - a) / fps for _, a, b in seg_rows])
    # Relative time of each segment's centre on a half circle: cosine similarity falls with distance in time.
    rel = np.asarray([(a + b) / 2 / max(len(videos[vi].features), 1) for vi, a, b in seg_rows])
    time_block = np.stack([np.cos(np.pi * rel), np.sin(np.pi * rel)], axis=1).astype(np.float32)
    desc_all = np.asarray(desc)
    # What is clustered: units of few frames beside their neighbours in time (segment.context_frames);
    # the videos' groups below are decided on the units' own means.
    n_ctx = context_units(np.asarray([b - a for _, a, b in seg_rows]), cfg.segment.context_frames)
    desc_ctx = with_context(desc_all, np.asarray([vi for vi, _, _ in seg_rows], np.int64), n_ctx)

    def cluster(rows: npt.NDArray[np.int64], weight: float) -> tuple[npt.NDArray[np.int32], int, float, str, Any]:
        """activity per segment of ``rows``, k, noise rate, how, fusion: HDBSCAN (K found) or k-means (``n_clusters``)."""
        feats = {"features": desc_ctx[rows]}
        cids, durs, tblock = clip_ids[rows], durations[rows], time_block[rows]
        if n_clusters is None:
            g = group_segments(feats, cids, durs, one_group, extra_block=(tblock, weight) if weight > 0 else None)
            c = g.clustering
            return c.activity, c.k, c.noise_rate, c.reason + (f"; {g.temporal_reason}" if g.temporal_reason else ""), g.fusion
        from sklearn.cluster import KMeans

        from handclust.core.clustering import knn_graph, l2_normalise
        from handclust.core.clustering.temporal import smooth_timelines

        fusion = fuse(feats, cids, one_group)
        fused = fusion.fused
        if weight > 0:
            fused = l2_normalise(np.hstack([fused, tblock * np.sqrt(weight)]))
        k = min(n_clusters, len(fused))  # k-means cannot make more clusters than there are segments
        labels = KMeans(n_clusters=k, n_init=10, random_state=cfg.cluster.seed).fit_predict(fused).astype(np.int32)
        activity, how = labels, f"k-means with k={k} (fixed by --k)" + (
            f"; --k {n_clusters} asked for more clusters than the {len(fused)} segments" if k < n_clusters else "")
        if cfg.cluster.temporal:
            knn_i, _, _ = knn_graph(fused, cfg.cluster.knn_k, cfg.cluster.backend)
            # k activities in a video of T seconds last T / k seconds each at most, on average (fewer
            # when they recur): the bout prior starts no longer than that (a 50 s video with 23 given
            # actions is not decoded with 60 s bouts, which left 2 of them).
            inv_c, n_c = clip_codes(cids)
            clip_s = float(np.median(np.bincount(inv_c, weights=durs, minlength=n_c)))
            run_s = min(cfg.cluster.mean_run_s, clip_s / k)
            # Votes from about one cluster's worth of neighbours, as the HDBSCAN path votes from at most
            # min_cluster_size: with k near the number of segments a wider vote outvotes every small cluster.
            votes = knn_i[:, : max(2, min(cfg.cluster.knn_k, round(len(fused) / k)))]
            tl = smooth_timelines(labels, votes, cids, durs, run_s, fused=fused,
                                  scale_jumps=cfg.cluster.jump_scale,
                                  learn_jumps=cfg.cluster.jump_learn)
            activity, how = tl.activity, how + "; " + tl.reason
        return activity, k, 0.0, how, fusion

    def discover(rows: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int32], int, float, str, Any, float, str]:
        """Cluster ``rows`` and decide on relative time there: activity, k, noise, how, fusion, time weight, note."""
        if time_weight is not None:
            activity, k, noise, how, fusion = cluster(rows, time_weight)
            return activity, k, noise, how, fusion, time_weight, f"relative time at weight {time_weight:g} (--time-weight)"
        # auto: time joins only when the activities found without it keep an order across videos
        activity, k, noise, how, fusion = cluster(rows, 0.0)
        order_labels, on = activity, f"the {k} activities found without it"
        if k < ORDER_K and len(activity) > ORDER_K:
            from sklearn.cluster import KMeans

            order_labels = KMeans(n_clusters=ORDER_K, n_init=3, random_state=cfg.cluster.seed).fit_predict(fusion.fused)
            on = f"{ORDER_K} k-means groups of the segments (only {k} activities found without time)"
        eta2, share = time_order(order_labels, durations[rows], clip_ids[rows], seed=cfg.cluster.seed)
        note = f"relative time: {on} explain {eta2:.2f} of its variance, more than {share:.0%} of shuffled bout orders do"
        if share >= ORDER_MIN and TIME_WEIGHT > 0:
            activity, k, noise, how, fusion = cluster(rows, TIME_WEIGHT)
            return activity, k, noise, how, fusion, TIME_WEIGHT, note + f" (a typical order: time joins at weight {TIME_WEIGHT:g})"
        return activity, k, noise, how, fusion, 0.0, note + f" (below {ORDER_MIN:.0%}: no typical order, time left out)"

    # Videos that come in groups (places, tasks, trades: clips whose means part clearly) are clustered
    # one group at a time: an activity is what recurs within a group, and the group is what separates
    # them. On real label sequences of two Breakfast tasks (benchmarks/real.py, two_levels) this moved
    # frame AMI / NMI of activity and task, as filmed, 0.827 / 0.282 -> 0.884 / 0.454 (held out).
    # Videos filed in a subfolder per task (features/<task>/) are tried as filed first, at the lower
    # bar a layout given beforehand needs (cluster.split_groups_folders; folder_groups).
    groups, groups_why = [np.arange(len(seg_rows))], "videos clustered together"
    if split_groups and n_clusters is None and len(seg_rows):
        given, folders_why = None, ""
        if cfg.cluster.split_groups_folders and len({v.task for v in videos}) > 1:
            given, folders_why = folder_groups(desc_all, clip_ids, {v.name: v.task or "" for v in videos}, seed=cfg.cluster.seed,
                                               unit="videos")
        if given is not None:
            groups, groups_why = given, folders_why
        else:
            groups = clip_groups(desc_all, clip_ids)
            found = f"their mean features part into {len(groups)} groups" if len(groups) > 1 else "their mean features do not part"
            groups_why = f"{folders_why}; {found}" if folders_why else found
    activity = np.full(len(seg_rows), -1, np.int32)
    k, noise_n, hows, notes, weights, fusion = 0, 0.0, [], [], [], None
    for gi, rows in enumerate(groups):
        act, k_g, noise_g, how_g, fusion_g, weight_g, note_g = discover(rows)
        ids, inv = np.unique(act, return_inverse=True)
        ids_ok = ids >= 0
        new = np.where(ids_ok, np.cumsum(ids_ok) - 1 + k, -1)
        activity[rows] = new[np.ravel(inv)]
        k += int(ids_ok.sum()) if len(groups) > 1 else k_g
        noise_n += noise_g * len(rows)
        label = f"group {gi + 1} of {len(groups)} ({len(np.unique(clip_ids[rows]))} videos): " if len(groups) > 1 else ""
        hows.append(label + how_g)
        notes.append(label + note_g)
        weights.append(weight_g)
        fusion = fusion if fusion is not None else fusion_g
    noise = noise_n / max(len(seg_rows), 1)
    how, time_note = " | ".join(hows), " | ".join(notes)
    weight = max(weights) if weights else 0.0
    per_frame = {v.name: np.zeros(len(v.features), np.int64) for v in videos}
    for (vi, a, b), lab in zip(seg_rows, activity.tolist()):
        per_frame[videos[vi].name][a:b] = lab
    for name, lab in per_frame.items():
        (outp / f"{name}.txt").write_text("\n".join(str(i) for i in lab.tolist()) + "\n")
    ev: dict[str, Any] = {"videos": len(videos), "frames": int(sum(len(v.features) for v in videos)),
                          "segments": len(seg_rows), "k": int(k), "noise_rate": float(noise), "clustering": how,
                          "fps": fps, "time_weight": weight, "time": time_note,
                          # units on each side each unit was clustered beside (segment.context_frames; 0: none)
                          "context_units": n_ctx,
                          # videos clustered apart, one list per group (one list: they did not part)
                          "video_groups": [sorted({str(n) for n in clip_ids[rows]}) for rows in groups],
                          "video_groups_reason": groups_why,
                          # the first group's fusion when the videos parted (each group has its own)
                          "fusion": {m: {"clip_normalised": sc.clip_normalised,
                                         "why": (f"group 1 of {len(groups)}: " if len(groups) > 1 else "") + fusion.reasons.get(m, "")}
                                     for m, sc in fusion.scores.items()},
                          "tasks": sorted({v.task for v in videos if v.task}) or None,
                          "mapping": read_mapping(root) or None,
                          # the settings that ran (FEATURE_DEFAULTS and --set), as run.json keeps them for footage
                          "config": {k: v for k, v in config_to_dict(cfg).items() if k in ("segment", "cluster")}}
    with_truth = [v for v in videos if v.truth is not None]
    if with_truth:
        truth = np.concatenate([np.asarray(v.truth, dtype=object) for v in with_truth])
        pred = np.concatenate([per_frame[v.name] for v in with_truth])
        vid = np.concatenate([np.full(len(v.truth or []), v.name, dtype=object) for v in with_truth])
        ev["ground_truth"] = segmentation_scores(truth, pred, vid)
    (outp / run_layout.EVAL).write_text(json.dumps(ev, indent=2, default=str))
    return ev
