"""Joint clustering of all segments of all clips: HDBSCAN whose cluster count follows the data
(min_cluster_size from the number of segments, or chosen by stability), noise assigned through
the kNN graph, then (``cluster.temporal``) a timeline per clip."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from handclust.config import ClusterConfig
from handclust.core.clustering.backends import (
    BackendError,
    Clusterer,
    CumlUMAP,
    Models,
    PCAReducer,
    Reducer,
    SubModels,
    UmapReducer,
    model_name,
    pick_clusterer,
    pick_reducer,
    resolve,
    resolve_models,
)
from handclust.core.clustering.fusion import Fusion, clip_codes, fuse, group_means
from handclust.core.clustering.neighbours import assign_noise, knn_graph, knn_query, l2_normalise, vote_labels
from handclust.core.clustering.shared import merge_single_clip_clusters
from handclust.core.clustering.temporal import Timelines
from handclust.core.segmentation import pca_reduce

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]


# --------------------------------------------------------------------------- clustering


def choose_min_cluster_size(n_segments: int, scale: float = 0.5) -> int:
    """Smallest group worth calling an activity: grows as ``scale`` x sqrt(n), at least 3
    (``cluster.size_scale``).

    sqrt keeps an activity that fills ~1 % of a large corpus discoverable while a 60-segment
    demo still needs 4 segments to agree.
    """
    return max(3, int(round(scale * math.sqrt(max(n_segments, 1)))))


def hdbscan_fit(x: npt.NDArray[np.floating], min_cluster_size: int, min_samples: int,
                backend: str | Clusterer = "auto") -> tuple[npt.NDArray[np.int32], F32, str]:
    """HDBSCAN labels (-1 = noise) and membership probabilities of L2-normalised rows, and the name
    of the clusterer. ``backend`` is a :class:`Clusterer` or ``cluster.backend`` (auto | cpu | gpu)."""
    x = l2_normalise(x)
    if len(x) < max(min_cluster_size, 2):
        return np.full(len(x), -1, np.int32), np.zeros(len(x), np.float32), "none (too few segments)"
    clusterer = pick_clusterer(*resolve(backend))[0] if isinstance(backend, str) else backend
    fit = clusterer.fit(x, min_cluster_size, min_samples)
    labels, probs = np.asarray(fit.labels, np.int32), np.asarray(fit.probabilities, np.float32)
    if labels.shape != (len(x),) or probs.shape != (len(x),):
        raise BackendError(f"clusterer {model_name(clusterer)} returned labels {labels.shape} and probabilities {probs.shape} "
                           f"for {len(x)} rows; both must be ({len(x)},)")
    return labels, probs, model_name(clusterer)


def umap_fit(x: npt.NDArray[np.floating], method: str = "umap", backend: str | Reducer = "auto", seed: int = 0) -> tuple[F32, str]:
    """2-D layout ``(n, 2)`` for the segment map, and the name of the reducer. ``backend`` is a
    :class:`Reducer` (``method`` then unused) or ``cluster.backend`` (auto | cpu | gpu)."""
    x = l2_normalise(x)
    n = len(x)
    reducer = pick_reducer(method, *resolve(backend), seed=seed)[0] if isinstance(backend, str) else backend
    if isinstance(reducer, UmapReducer | CumlUMAP) and n < 6:
        log.warning("2-D map: %d segments are too few for UMAP, using PCA", n)
        reducer = PCAReducer()
    y = np.asarray(reducer.fit_transform(x), np.float32)
    if y.shape != (n, 2):
        raise BackendError(f"reducer {model_name(reducer)} returned shape {y.shape} for {n} rows; the map needs ({n}, 2)")
    return y, model_name(reducer)


@dataclass
class Clustering:
    labels: npt.NDArray[np.int32]
    probabilities: F32
    activity: npt.NDArray[np.int32]
    reassigned: npt.NDArray[np.bool_]
    knn_idx: npt.NDArray[np.int64]
    knn_dist: F32
    min_cluster_size: int
    min_samples: int
    backends: dict[str, str]  # hdbscan / knn -> what ran
    reason: str
    backend_reasons: dict[str, str] = field(default_factory=dict)  # hdbscan / knn / map_2d -> why that one

    @property
    def k(self) -> int:
        return len(np.unique(self.labels[self.labels >= 0]))

    @property
    def noise_rate(self) -> float:
        return float((self.labels < 0).mean()) if len(self.labels) else 0.0


def hdbscan_input(fused: npt.NDArray[np.floating], cfg: ClusterConfig) -> tuple[npt.NDArray[np.floating], int | None]:
    """The fused vectors HDBSCAN sees, and how many principal components they were cut to (None: all dims).

    HDBSCAN's core distances come from kd/ball trees, which degrade towards brute force as the
    dimension grows: on 20k planted segments 44 fused dims took 14.5 s, 16 principal components
    3.2 s with the same 12 clusters. On a few dozen segments PCA is noisy (on our 8-clip sample
    footage it cost 0.12 frame ARI), hence ``hdbscan_reduce_from``. Neighbour graphs and noise
    assignment always use every fused dimension.
    """
    dims = cfg.hdbscan_dims
    if dims is None or fused.shape[1] <= dims or len(fused) < cfg.hdbscan_reduce_from:
        return fused, None
    return pca_reduce(fused, dims).astype(np.float32), dims


def size_candidates(base: int, n: int) -> list[int]:
    """min_cluster_size values tried around ``base``: half to twice it, geometric, at least 3."""
    hi = max(3, n // 2)
    return sorted({int(np.clip(round(base * f), 3, hi)) for f in (0.5, 0.7, 1.0, 1.4, 2.0)})


def label_agreement(a: npt.NDArray[np.int32], b: npt.NDArray[np.int32]) -> float:
    """ARI of two labellings, noise counted as one more label (a clustering that turns into noise disagrees)."""
    from sklearn.metrics import adjusted_rand_score

    if len(np.unique(a)) < 2 and len(np.unique(b)) < 2:
        return 1.0 if np.array_equal(a >= 0, b >= 0) else 0.0
    return float(adjusted_rand_score(a, b))


def choose_by_stability(x: npt.NDArray[np.floating], base: int, backend: str | Clusterer, min_samples: int | None,
                        ) -> tuple[npt.NDArray[np.int32], F32, str, int, int, str]:
    """HDBSCAN at each of :func:`size_candidates`; keep the size whose clustering agrees best with its
    neighbouring sizes (mean ARI, noise as a label). A partition the data really has survives a
    change of min_cluster_size; one that flips between k=3 and k=5 does not. Among sizes within
    0.05 of the best agreement, the largest wins (the fewest activities the data supports).
    Returns labels, probabilities, backend, size, min_samples and the reason."""
    sizes = size_candidates(base, len(x))
    fits = []
    for mcs in sizes:
        ms = min_samples or max(2, mcs // 2)
        labels, probs, hb = hdbscan_fit(x, mcs, ms, backend)
        fits.append((labels, probs, hb, mcs, ms))
    if len(fits) == 1:
        labels, probs, hb, mcs, ms = fits[0]
        return labels, probs, hb, mcs, ms, f"min_cluster_size={mcs} (the only size possible on {len(x)} segments)"
    stab = []
    for i in range(len(fits)):
        nb = [j for j in (i - 1, i + 1) if 0 <= j < len(fits)]
        agree = float(np.mean([label_agreement(fits[i][0], fits[j][0]) for j in nb]))
        k = len(np.unique(fits[i][0][fits[i][0] >= 0]))
        stab.append(agree if k >= 2 else agree * 0.5)  # one cluster or none is a last resort, not a finding
    noise = [float((f[0] < 0).mean()) for f in fits]
    # Parsimony: among sizes about as stable as the best (within 0.05), the largest size, i.e. the
    # fewest activities; then the lower noise rate.
    top = max(stab)
    best = max((i for i in range(len(fits)) if stab[i] >= top - 0.05), key=lambda i: (sizes[i], -noise[i]))
    labels, probs, hb, mcs, ms = fits[best]
    ks = [len(np.unique(f[0][f[0] >= 0])) for f in fits]
    table = ", ".join(f"{m}: k={k} agree={a:.2f}" for m, k, a in zip(sizes, ks, stab))
    return labels, probs, hb, mcs, ms, f"min_cluster_size={mcs} chosen by stability across sizes ({table})"


STABILITY_REPORT_MAX = 20_000  # segments up to which a run reports how stable its k is (two more HDBSCAN fits)


def stability_report(x: npt.NDArray[np.floating], labels: npt.NDArray[np.int32], mcs: int, backend: str | Clusterer,
                     min_samples: int | None) -> str:
    """How well the data pins k down: the chosen clustering's agreement (ARI, noise as a label) with
    HDBSCAN at 0.7 and 1.4 x its min_cluster_size, and their k. Reported, not used to choose:
    choosing the size by this agreement (``cluster.stability``) gave per-video MoF 0.925 against
    0.96 and F1@50 0.84 against 0.90 on 10 held-out synthetic feature sets, k from 4 to 22 for 7
    true actions, and no cluster at all on 11 segments."""
    parts = []
    for f in (0.7, 1.4):
        m = int(np.clip(round(mcs * f), 3, max(3, len(x) // 2)))
        if m == mcs:
            continue
        other, _, _ = hdbscan_fit(x, m, min_samples or max(2, m // 2), backend)
        k = len(np.unique(other[other >= 0]))
        parts.append(f"min_cluster_size={m}: k={k}, agreement {label_agreement(labels, other):.2f}")
    return ("stability of this k: " + "; ".join(parts)) if parts else "stability not measurable on this few segments"


def cluster_segments(fused: F32, cfg: ClusterConfig, models: Models | None = None,
                     knn: tuple[npt.NDArray[np.int64], F32, str] | None = None) -> Clustering:
    """HDBSCAN on the fused vectors (on a sample above ``cfg.max_fit_segments``), the kNN graph and
    noise assignment. ``models`` are the sub-models to use (default: :func:`resolve_models` from ``cfg``);
    ``knn``: the kNN graph of these vectors (indices, distances, what built it) when one was made already."""
    models = models or resolve_models(cfg.backend, cfg.map_method, cfg.seed)
    n = len(fused)
    auto = cfg.min_cluster_size is None
    sampled = n > cfg.max_fit_segments
    n_fit = cfg.max_fit_segments if sampled else n
    base = cfg.min_cluster_size or choose_min_cluster_size(n_fit, cfg.size_scale)
    fit = np.sort(np.random.default_rng(cfg.seed).choice(n, n_fit, replace=False)) if sampled else np.arange(n)
    x, pcs = hdbscan_input(fused[fit], cfg)
    if auto and cfg.stability and n_fit >= 8:
        fit_labels, fit_probs, hb, mcs, ms, why = choose_by_stability(x, base, models.clusterer, cfg.min_samples)
    else:
        mcs = base
        ms = cfg.min_samples or max(2, mcs // 2)
        fit_labels, fit_probs, hb = hdbscan_fit(x, mcs, ms, models.clusterer)
        why = f"min_cluster_size={mcs} " + (f"({cfg.size_scale:.3g} x sqrt(n), at least 3)" if auto else "(set in config)")
        if auto and n_fit >= 8 and n_fit <= STABILITY_REPORT_MAX:
            why += "; " + stability_report(x, fit_labels, mcs, models.clusterer, cfg.min_samples)
    if sampled:
        # BERTopic's advice at millions of documents: fit on a representative sample, then place
        # every other point through the neighbour graph of the sample.
        rest = np.setdiff1d(np.arange(n), fit)
        qi, qd, _ = knn_query(fused[fit], fused[rest], cfg.knn_k, models.neighbours)
        rest_labels, rest_share = vote_labels(fit_labels, qi, qd)
        labels = np.empty(n, np.int32)
        probs = np.empty(n, np.float32)
        labels[fit], probs[fit] = fit_labels, fit_probs
        labels[rest], probs[rest] = rest_labels, np.where(rest_labels >= 0, rest_share, 0.0)
        hb += f" (fit on {n_fit} of {n}, rest by kNN vote)"
        if cfg.second_pass:
            hb += "; " + second_pass(fused, labels, cfg, models)
    else:
        labels, probs = fit_labels, fit_probs
    knn_i, knn_d, kb = knn if knn is not None else knn_graph(fused, cfg.knn_k, models.neighbours)
    if cfg.assign_noise:
        activity, moved = assign_noise(labels, knn_i, knn_d, l2_normalise(fused))
    else:
        activity, moved = labels.copy(), np.zeros(n, bool)
    k = len(np.unique(labels[labels >= 0]))
    reason = (f"HDBSCAN on {n_fit} segments" + (f" sampled from {n}" if sampled else "")
              + (f" ({pcs} principal components of {fused.shape[1]} fused dims)" if pcs else "") + f" with {why}"
              + f", min_samples={ms}: {k} clusters survived HDBSCAN's excess-of-mass selection")
    return Clustering(labels, probs, activity, moved, knn_i, knn_d, mcs, ms, {"hdbscan": hb, "knn": kb}, reason,
                      dict(models.reasons))


COARSER_STEP = math.sqrt(2)  # size_scale grows by this at each coarser try
COARSER_TRIES = 3  # at most 2.8 x the first min_cluster_size


def private_clusters(labels: npt.NDArray[np.int32], clip_ids: npt.NDArray[np.object_]) -> tuple[int, int]:
    """How many of the clusters in ``labels`` (-1 noise) sit inside a single clip, and how many there are."""
    has = labels >= 0
    if not has.any():
        return 0, 0
    codes, _ = clip_codes(np.asarray(clip_ids, dtype=object))
    pairs = np.unique(np.stack([labels[has].astype(np.int64), codes[has]]), axis=1)
    clusters, n_clips = np.unique(pairs[0], return_counts=True)
    return int((n_clips == 1).sum()), len(clusters)


def coarser_while_private(fused: F32, clip_ids: npt.NDArray[np.object_], cfg: ClusterConfig, models: Models,
                          first: Clustering) -> Clustering:
    """HDBSCAN again at a coarser density while most of its clusters are one clip's each (``cfg.max_private_share``).

    Activities repeat across clips. Where a person's look wanders slowly through a video, the
    densest groups are stretches of one video, and HDBSCAN at the usual size finds each video's
    own versions of each action (the slow rendering of real Breakfast sequences: 6 to 18 of 12 to
    21 clusters inside one video, k 12-19 for 4-11 actions). A larger min_cluster_size asks for
    groups no single video's stretch fills. Stops at the first size where at most that share is
    private, after ``COARSER_TRIES`` tries, or where the coarser fit finds fewer than 2 clusters
    (the last fit with 2 or more stays)."""
    private, k = private_clusters(first.labels, clip_ids)
    if cfg.max_private_share is None or cfg.min_cluster_size is not None or k < 2 or private <= cfg.max_private_share * k:
        return first
    if clip_codes(np.asarray(clip_ids, dtype=object))[1] < 3:
        return first
    cur, scale, trail = first, cfg.size_scale, [f"{private} of {k} clusters inside one clip at min_cluster_size={first.min_cluster_size}"]
    for _ in range(COARSER_TRIES):
        scale *= COARSER_STEP
        if choose_min_cluster_size(min(len(fused), cfg.max_fit_segments), scale) <= cur.min_cluster_size:
            continue  # rounding on few segments: the same fit again
        nxt = cluster_segments(fused, cfg.model_copy(update={"size_scale": scale}), models,
                               knn=(first.knn_idx, first.knn_dist, first.backends["knn"]))
        p2, k2 = private_clusters(nxt.labels, clip_ids)
        if k2 < 2:
            trail.append(f"{k2} at min_cluster_size={nxt.min_cluster_size} (kept the previous)")
            break
        cur, private, k = nxt, p2, k2
        trail.append(f"{p2} of {k2} at min_cluster_size={nxt.min_cluster_size}")
        if private <= cfg.max_private_share * k:
            break
    if cur is first:
        return first
    why = (f"; most clusters were one clip's own (more than {cfg.max_private_share:g}), so a coarser density: "
           + ", then ".join(trail))
    return replace(cur, reason=cur.reason + why)


@dataclass
class Grouping:
    """Fusion, clustering and the temporal model of one set of segments: what a run, an ablation
    and ``segment-features`` all compute the same way."""

    fusion: Fusion
    clustering: Clustering
    temporal_reason: str | None
    switches: tuple[int, int] | None  # activity changes within clips before / after the temporal model
    coarse: npt.NDArray[np.int32] | None = None  # (n,) coarse cluster per segment when cfg.fine split them
    parent: dict[int, int] | None = None  # fine activity -> coarse cluster
    timelines: Timelines | None = None  # the temporal model's result (None when cluster.temporal is off)
    groups: list[npt.NDArray[np.int64]] | None = None  # rows of each group of clips clustered apart (None: one group)
    groups_reason: str = ""  # how the clips were (or were not) parted


class RowsOf(Mapping[str, npt.NDArray[np.floating]]):
    """``modalities`` seen on ``rows`` only, a modality read when asked (as the run's descriptors are)."""

    def __init__(self, modalities: Mapping[str, npt.NDArray[np.floating]], rows: npt.NDArray[np.int64]) -> None:
        self.modalities, self.rows = modalities, rows

    def __getitem__(self, m: str) -> npt.NDArray[np.floating]:
        return np.asarray(self.modalities[m])[self.rows]

    def __iter__(self) -> Iterator[str]:
        return iter(self.modalities)

    def __len__(self) -> int:
        return len(self.modalities)


def part_clips(modalities: Mapping[str, npt.NDArray[np.floating]], clip_ids: npt.NDArray[np.object_], cfg: ClusterConfig,
               measured: dict[str, npt.NDArray[np.bool_]] | None = None, clip_folders: Mapping[str, str] | None = None,
               ) -> tuple[list[npt.NDArray[np.int64]], str, Fusion | None]:
    """Rows of each group of clips to cluster apart (:func:`handclust.core.clustering.shared.clip_groups`
    on the fused ``cfg.split_groups_on`` descriptors (the scene; every modality where it is absent)
    before any per-clip normalisation: what sets a site or a trade apart is its clips' mean look,
    which normalisation within clips removes), why, in words, and that fusion (None where it was
    not made). ``clip_folders`` (clip id -> folder, ``cluster.split_groups_folders``): where the
    clips sit in several folders, that layout is tried first, at the lower bar a partition given
    beforehand needs (:func:`handclust.core.clustering.shared.folder_groups`)."""
    from handclust.core.clustering.shared import GROUP_MIN_CLIPS, GROUP_RATIO, clip_groups, folder_groups

    n = len(clip_ids)
    _, n_clips = clip_codes(np.asarray(clip_ids, dtype=object))
    if not cfg.split_groups or n_clips < 2 * GROUP_MIN_CLIPS:
        why = "cluster.split_groups=false" if not cfg.split_groups else f"{n_clips} clips (< {2 * GROUP_MIN_CLIPS}: never parted)"
        return [np.arange(n)], f"clips clustered together: {why}", None
    on = cfg.split_groups_on
    if on is not None and on in modalities:
        modalities = {on: modalities[on]}
        measured = None if measured is None or on not in measured else {on: measured[on]}
    raw = fuse(modalities, clip_ids, cfg.model_copy(update={"clip_normalise": "off"}), measured)
    folders_why = ""
    if cfg.split_groups_folders and clip_folders:
        given, folders_why = folder_groups(raw.fused, clip_ids, clip_folders, scale=False, seed=cfg.seed)
        if given is not None:
            return given, (f"{len(given)} groups of clips clustered apart: {folders_why} (cluster.split_groups_folders); "
                           "activities are numbered apart"), raw
        folders_why = f"; {folders_why}"
    groups = clip_groups(raw.fused, clip_ids, scale=False, seed=cfg.seed)
    if len(groups) == 1:
        return groups, (f"clips clustered together: their mean descriptors do not part (clips of two parts would be "
                        f"under {GROUP_RATIO:g} x as far apart as clips of one part){folders_why}"), raw
    sizes = ", ".join(str(len(np.unique(np.asarray(clip_ids, dtype=object)[r]))) for r in groups)
    return groups, (f"{len(groups)} groups of clips ({sizes} clips) clustered apart: their mean descriptors part with "
                    f"clips of different groups at least {GROUP_RATIO:g} x as far apart as clips of one group "
                    f"(cluster.split_groups){folders_why}; activities are numbered apart"), raw


def join_groups(parts: list[Grouping], groups: list[npt.NDArray[np.int64]], reason: str,
                clip_ids: npt.NDArray[np.object_], router: Fusion) -> Grouping:
    """One :class:`Grouping` of the whole set from each group's, activities and clusters numbered apart;
    ``router``: the fusion the clips were parted on (new clips are sent to a group in its space)."""
    from handclust.core.clustering.fusion import PartedFusion

    n = sum(len(r) for r in groups)
    labels, activity = np.full(n, -1, np.int32), np.full(n, -1, np.int32)
    prob, moved = np.zeros(n, np.float32), np.zeros(n, bool)
    width = min((p.clustering.knn_idx.shape[1] for p in parts if p.clustering.knn_idx.shape[1]), default=0)
    knn_idx, knn_dist = np.zeros((n, width), np.int64), np.zeros((n, width), np.float32)
    coarse = np.full(n, -1, np.int32) if any(p.coarse is not None for p in parts) else None
    parent: dict[int, int] | None = {} if any(p.parent is not None for p in parts) else None
    offset = coarse_offset = 0
    reasons, temporal, before, after = [], [], 0, 0
    for g, (p, rows) in enumerate(zip(parts, groups, strict=True)):
        c = p.clustering
        if c.k == 0:  # nothing recurs inside this group: its segments are one activity, the group itself
            one = np.zeros(len(rows), np.int32)
            c = replace(c, labels=one, activity=one, reason=c.reason + f"; no cluster found: its {len(rows)} segments are one activity")
        top = int(max(c.labels.max(initial=-1), c.activity.max(initial=-1))) + 1
        labels[rows] = np.where(c.labels >= 0, c.labels + offset, -1)
        activity[rows] = np.where(c.activity >= 0, c.activity + offset, -1)
        prob[rows], moved[rows] = c.probabilities, c.reassigned
        if c.knn_idx.shape[1]:
            knn_idx[rows], knn_dist[rows] = rows[c.knn_idx[:, :width]], c.knn_dist[:, :width]
        else:  # nothing was clustered in this group (no modality observed): each segment its own neighbour
            knn_idx[rows], knn_dist[rows] = rows[:, None], 1.0
        own_coarse = p.coarse if p.coarse is not None else c.activity  # no fine level here: each activity its own coarse one
        own_parent = p.parent if p.parent is not None else {int(a): int(a) for a in np.unique(c.activity[c.activity >= 0])}
        if coarse is not None:
            coarse[rows] = np.where(own_coarse >= 0, own_coarse + coarse_offset, -1)
        if parent is not None:
            parent.update({a + offset: b + coarse_offset for a, b in own_parent.items()})
        coarse_offset += int(own_coarse.max(initial=-1)) + 1
        offset += top
        label = f"group {g + 1} of {len(parts)} ({len(np.unique(clip_ids[rows]))} clips): "
        reasons.append(label + c.reason)
        if p.temporal_reason:
            temporal.append(label + p.temporal_reason)
        if p.switches:
            before, after = before + p.switches[0], after + p.switches[1]
    first = parts[0].clustering
    clustering = Clustering(labels, prob, activity, moved, knn_idx, knn_dist, first.min_cluster_size, first.min_samples,
                            dict(first.backends), reason + " | " + " | ".join(reasons), dict(first.backend_reasons))
    means = []
    for rows in groups:  # each group's clips' means where they were parted: where a new clip is sent
        inv, n_clips = clip_codes(clip_ids[rows])
        means.append(group_means(router.fused[rows].astype(np.float64), inv, n_clips).astype(np.float32))
    fusion = PartedFusion.from_parts([p.fusion for p in parts], router, means, groups)
    tl = parts[0].timelines
    timelines = None if tl is None else Timelines(activity.copy(), before, after, " | ".join(temporal), tl.run_s,
                                                  sum(p.timelines.boundaries for p in parts if p.timelines),
                                                  None if tl.jumps is None else sum(p.timelines.jumps or 0 for p in parts if p.timelines),
                                                  tl.jump_floor)
    return Grouping(fusion, clustering, " | ".join(temporal) or None, (before, after) if temporal else None, coarse, parent,
                    timelines, groups, reason)


def group_segments(modalities: Mapping[str, npt.NDArray[np.floating]], clip_ids: npt.NDArray[np.object_],
                   durations_s: npt.NDArray[np.floating], cfg: ClusterConfig,
                   measured: dict[str, npt.NDArray[np.bool_]] | None = None,
                   extra_block: tuple[F32, float] | None = None, models: SubModels | Models | None = None,
                   clip_folders: Mapping[str, str] | None = None) -> Grouping:
    """Fuse, cluster jointly, then (``cfg.temporal``) smooth each clip's timeline.

    Rows of a clip must be in time order. ``extra_block`` is ``(vectors, weight)`` appended to the
    fused vectors before clustering (relative time in ``segment-features --time-weight``).
    ``models``: sub-models passed in (:class:`SubModels`, the rest chosen by ``cfg.backend``) or
    already resolved (:class:`Models`). Clips that come in groups (``cfg.split_groups``,
    :func:`part_clips`; ``clip_folders``: clip id -> the folder it sits in, a layout tried first) are
    clustered one group at a time (:func:`join_groups`).
    """
    # Resolved first: cluster.backend=gpu without a GPU stops here, not after the fusion's work.
    resolved = models if isinstance(models, Models) else resolve_models(cfg.backend, cfg.map_method, cfg.seed, models)
    clip_ids = np.asarray(clip_ids, dtype=object)
    groups, why, router = part_clips(modalities, clip_ids, cfg, measured, clip_folders) if extra_block is None else ([np.arange(len(clip_ids))], "", None)
    if len(groups) == 1:
        out = _group_one(modalities, clip_ids, durations_s, cfg, measured, extra_block, resolved)
        out.groups_reason = why
        return out
    durations_s = np.asarray(durations_s)
    parts = [_group_one(RowsOf(modalities, rows), clip_ids[rows], durations_s[rows], cfg,
                        None if measured is None else {m: np.asarray(v)[rows] for m, v in measured.items()}, None, resolved)
             for rows in groups]
    assert router is not None
    return join_groups(parts, groups, why, clip_ids, router)


def _group_one(modalities: Mapping[str, npt.NDArray[np.floating]], clip_ids: npt.NDArray[np.object_],
               durations_s: npt.NDArray[np.floating], cfg: ClusterConfig, measured: dict[str, npt.NDArray[np.bool_]] | None,
               extra_block: tuple[F32, float] | None, resolved: Models) -> Grouping:
    """:func:`group_segments` on one group of clips."""
    from handclust.core.clustering.temporal import smooth_timelines

    fusion = fuse(modalities, clip_ids, cfg, measured)
    fused = fusion.fused
    if extra_block is not None and extra_block[1] > 0:
        fused = l2_normalise(np.hstack([fused, l2_normalise(extra_block[0]) * np.sqrt(extra_block[1])]))
        fusion = Fusion(fused, fusion.scores, fusion.transforms, fusion.reasons)
    if all(s.weight == 0 for s in fusion.scores.values()):  # nothing observed (e.g. pose on footage with no hand)
        n = len(fused)
        none = Clustering(np.full(n, -1, np.int32), np.zeros(n, np.float32), np.full(n, -1, np.int32), np.zeros(n, bool),
                          np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32), 0, 0, {}, "no modality observed: nothing to cluster")
        return Grouping(fusion, none, None, None)
    clustering = cluster_segments(fused, cfg, resolved)
    clustering = coarser_while_private(fused, clip_ids, cfg, resolved, clustering)
    if cfg.merge_single_clip:
        sm = merge_single_clip_clusters(clustering.labels, fused, clip_ids, seed=cfg.seed)
        if sm.merged:
            if cfg.assign_noise:
                activity, moved = assign_noise(sm.labels, clustering.knn_idx, clustering.knn_dist, l2_normalise(fused))
            else:
                activity, moved = sm.labels.copy(), np.zeros(len(sm.labels), bool)
            clustering = replace(clustering, labels=sm.labels, activity=activity, reassigned=moved)
        clustering.reason += "; " + sm.reason
    coarse, parent = None, None
    # A clusterer the caller passed in decides the partition itself: neither the fine level nor k-means redo it.
    own_clusterer = resolved.reasons.get("hdbscan", "").endswith("passed in by the caller")
    if cfg.fine and own_clusterer:
        clustering.reason += "; no fine level: the clusterer was passed in by the caller"
    elif cfg.fine:
        ref = refine_within(clustering.activity, fused, clip_ids, cfg)
        coarse, parent = clustering.activity.copy(), ref.parent
        clustering = replace(clustering, labels=np.where(clustering.labels >= 0, ref.fine, -1).astype(np.int32),
                             activity=ref.fine, reason=clustering.reason + "; " + ref.reason)
    if cfg.refine == "kmeans" and own_clusterer:
        clustering.reason += "; no k-means refinement: the clusterer was passed in by the caller"
    elif cfg.refine == "kmeans":
        act, moved, why = kmeans_refine(fused, clustering.activity, cfg.seed)
        if moved:
            clustering = replace(clustering, activity=act, labels=np.where(clustering.labels >= 0, act, -1).astype(np.int32),
                                 reason=clustering.reason + "; " + why)
            if parent is not None:
                coarse = np.asarray([parent[int(a)] if a >= 0 else -1 for a in act.tolist()], np.int32)
    if not cfg.temporal:
        return Grouping(fusion, clustering, None, None, coarse, parent)
    # Votes from at most min_cluster_size neighbours: a cluster may be that small, and a wider vote
    # would let a bigger neighbouring cluster outvote the members of a small one.
    votes = clustering.knn_idx[:, : max(2, min(cfg.knn_k, clustering.min_cluster_size))]
    tl = smooth_timelines(clustering.activity, votes, np.asarray(clip_ids, dtype=object),
                          durations_s, cfg.mean_run_s, fused=fused, scale_jumps=cfg.jump_scale, learn_jumps=cfg.jump_learn)
    clustering.activity = tl.activity
    clustering.reassigned = tl.activity != clustering.labels
    return Grouping(fusion, clustering, tl.reason, (tl.switches_before, tl.switches_after), coarse, parent, tl)


def second_pass(fused: F32, labels: npt.NDArray[np.int32], cfg: ClusterConfig, models: Models) -> str:
    """Sample-then-refine, for K above one fit's sample: each cluster the sample found is clustered
    again on its own members (up to ``cfg.max_fit_segments`` of them, the rest placed by kNN vote)
    at the min_cluster_size of the whole corpus (cluster.size_scale x sqrt(n)), and split where HDBSCAN finds
    more than one cluster in it: the largest part keeps the id. An activity of 0.05 % of a corpus
    has ~25 segments in a 50k sample, below that sample's min_cluster_size (112), so the first fit
    merges it into its nearest cluster or calls it noise; among that cluster's members it has all of
    its segments. In place on ``labels`` (a split part keeps its membership probability); returns what it did, in words."""
    mcs = choose_min_cluster_size(len(labels), cfg.size_scale)
    ms = cfg.min_samples or max(2, mcs // 2)
    rng = np.random.default_rng(cfg.seed + 1)
    nxt, added, split = int(labels.max()) + 1, 0, []
    for c in np.unique(labels[labels >= 0]).tolist():
        members = np.flatnonzero(labels == c)
        if len(members) < 4 * mcs:
            continue
        fit = np.sort(rng.choice(members, cfg.max_fit_segments, replace=False)) if len(members) > cfg.max_fit_segments else members
        x, _ = hdbscan_input(fused[fit], cfg)
        sub, _, _ = hdbscan_fit(x, mcs, ms, models.clusterer)
        parts = np.unique(sub[sub >= 0])
        if len(parts) < 2:
            continue
        rest = np.setdiff1d(members, fit)
        sub_all = np.full(len(labels), -1, np.int32)
        sub_all[fit] = sub
        if len(rest):
            qi, qd, _ = knn_query(fused[fit], fused[rest], cfg.knn_k, models.neighbours)
            sub_all[rest] = vote_labels(sub, qi, qd)[0]
        sizes = np.bincount(sub_all[members][sub_all[members] >= 0], minlength=int(parts.max()) + 1)
        keep = int(sizes.argmax())
        for part in parts.tolist():
            if part == keep:
                continue
            rows = members[sub_all[members] == part]
            labels[rows] = nxt
            nxt += 1
            added += 1
        split.append(f"{c} -> {len(parts)}")
    if not added:
        return f"second pass (min_cluster_size {mcs} of the whole corpus): no cluster splits"
    return f"second pass (min_cluster_size {mcs} of the whole corpus): {added} more clusters ({', '.join(split)})"


# --------------------------------------------------------------------------- two levels


@dataclass
class Refinement:
    """Fine activities inside each coarse cluster (:func:`refine_within`)."""

    fine: npt.NDArray[np.int32]  # (n,) fine activity per segment, ids unique across coarse clusters
    parent: dict[int, int]  # fine id -> coarse cluster id
    reason: str


def _choose_k_silhouette(x: npt.NDArray[np.floating], max_k: int, min_silhouette: float, seed: int,
                         sample: int = 3000) -> tuple[npt.NDArray[np.int32], int, float]:
    """k-means (on L2-normalised rows: cosine) at k = 2..max_k; the k of the best silhouette, or 1 when
    no k reaches ``min_silhouette`` (the group is one activity). Silhouette on a sample above ``sample`` rows."""
    import warnings

    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import silhouette_score

    best: tuple[float, int, npt.NDArray[np.int32]] = (-1.0, 1, np.zeros(len(x), np.int32))
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(x), sample, replace=False)) if len(x) > sample else None
    for k in range(2, max_k + 1):
        with warnings.catch_warnings():  # fewer distinct rows than k: k-means says so once per k; the labels say it here
            warnings.simplefilter("ignore", ConvergenceWarning)
            lab = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(x).astype(np.int32)
        if len(np.unique(lab)) < 2:
            continue
        s = float(silhouette_score(x[idx] if idx is not None else x, lab[idx] if idx is not None else lab))
        if s > best[0]:
            best = (s, k, lab)
    if best[0] < min_silhouette:
        return np.zeros(len(x), np.int32), 1, best[0]
    return best[2], best[1], best[0]


def _split_again(x: npt.NDArray[np.float32], lab: npt.NDArray[np.int32], k: int, cfg: ClusterConfig) -> tuple[npt.NDArray[np.int32], int]:
    """Each of ``k`` fine activities with at least 2 x ``cfg.fine_sub_min_segments`` segments split once
    more the same way (centred on its own mean, k by silhouette); returns the new labels and their count.
    A silhouette picks the coarsest clear split, and inside a long clip of varied work that is often 2
    (frying against the rest of a pancake task); the activities inside each part need a second look."""
    out = np.zeros(len(lab), np.int32)
    n = 0
    for part in range(k):
        m = np.flatnonzero(lab == part)
        max_k = min(cfg.fine_max_k, len(m) // max(cfg.fine_sub_min_segments, 1))
        sub, sk = np.zeros(len(m), np.int32), 1
        if max_k >= 2:
            xp = np.asarray(x[m], np.float64)
            sub, sk, _ = _choose_k_silhouette(l2_normalise((xp - xp.mean(0)).astype(np.float32)), max_k,
                                              cfg.fine_min_silhouette, cfg.seed)
        out[m] = n + sub
        n += sk
    return out, n


def refine_within(activity: npt.NDArray[np.int32], fused: npt.NDArray[np.floating], clip_ids: npt.NDArray[np.object_],
                  cfg: ClusterConfig) -> Refinement:
    """The fine level: what recurs inside each coarse cluster.

    Joint clustering answers what separates clips first (site, trade, phase): its clusters are the
    coarse level. Inside one coarse cluster, the fused vectors are centred on the cluster's mean
    and on each clip's mean within it (with at least two clips: what is left is not where the clip
    was filmed), L2-normalised, and split by k-means at the k with the best silhouette, 2 to
    ``cfg.fine_max_k``, or kept whole when no k reaches ``cfg.fine_min_silhouette``. Only a coarse
    cluster that holds at least ``cfg.fine_clip_share`` of the segments of the clips it appears in is
    split (a kind of clip); one its clips move in and out of is already an activity. Clusters with
    fewer than ``2 x cfg.fine_min_segments`` segments stay whole. With ``cfg.fine_levels`` 2, each
    fine activity is split once more the same way (:func:`_split_again`). Pure function of its inputs.
    """
    fine = np.full(len(activity), -1, np.int32)
    parent: dict[int, int] = {}
    parts: list[str] = []
    clip_ids = np.asarray(clip_ids, dtype=object)
    codes, n_clips = clip_codes(clip_ids)  # integer clip codes: per-cluster shares without string comparisons
    per_clip = np.bincount(codes, minlength=n_clips)
    nxt = 0
    for c in np.unique(activity[activity >= 0]).tolist():
        rows = np.flatnonzero(activity == c)
        max_k = min(cfg.fine_max_k, len(rows) // max(cfg.fine_min_segments, 1))
        k, sil = 1, float("nan")
        # A coarse cluster is a kind of clip (site, trade) when it holds most of each clip it is in;
        # one that its clips move in and out of over time is already an activity, and splitting it
        # again finds how one activity drifts (on single-task real sequences: whole-set MoF 0.85 -> 0.68).
        # Per member, the share of its own clip this cluster holds, averaged over the members: a stray
        # segment or two in another clip no longer halves it (a 7-minute clip of one trade, plus three
        # segments of the other trade's clip, counted 53 % and stayed one activity on the helmet proxy).
        in_clip = np.bincount(codes[rows], minlength=n_clips)
        share = float(np.sum(in_clip.astype(np.float64) ** 2 / np.maximum(per_clip, 1))) / max(len(rows), 1)
        log.debug("coarse cluster %s holds %.2f of its clips' segments", c, share)
        if max_k >= 2 and share >= cfg.fine_clip_share:
            x = np.asarray(fused[rows], np.float64)
            x = x - x.mean(0)
            groups = clip_ids[rows]
            if len(np.unique(groups)) >= 2:
                _, inv = np.unique(groups, return_inverse=True)
                cnt = np.bincount(inv).astype(np.float64)
                means = np.zeros((cnt.size, x.shape[1]))
                np.add.at(means, inv, x)
                x = x - means[inv] / cnt[inv, None]
            x = l2_normalise(x.astype(np.float32))
            lab, k, sil = _choose_k_silhouette(x, max_k, cfg.fine_min_silhouette, cfg.seed)
            for _level in range(cfg.fine_levels - 1):
                lab, k_more = _split_again(x, lab, k, cfg)
                if k_more == k:
                    break
                k = k_more
        else:
            lab = np.zeros(len(rows), np.int32)
        for j in range(k):
            parent[nxt + j] = int(c)
        fine[rows] = nxt + lab
        nxt += k
        parts.append(f"{c}: {k}" + (f" (silhouette {sil:.2f})" if k > 1 else "") + f" [holds {share:.0%} of its clips]")
    reason = ("fine activities inside each coarse cluster (k-means on what is left after the cluster's and each clip's "
              f"mean, k by silhouette >= {cfg.fine_min_silhouette:g}): " + ", ".join(parts))
    return Refinement(fine, parent, reason)


def kmeans_refine(fused: npt.NDArray[np.floating], activity: npt.NDArray[np.int32], seed: int = 0,
                  max_iter: int = 30) -> tuple[npt.NDArray[np.int32], int, str]:
    """k-means started from the activities' centroids: HDBSCAN (and the fine level) choose k and
    where the activities are, Lloyd's iterations then give every segment the nearest activity and
    move the centroids until nothing moves. On real segments (IKEA assembly, a model's class
    probabilities) HDBSCAN's own partition scored well below k-means at the k it found (whole-set
    MoF 0.37 against 0.50); started from HDBSCAN's centroids, k-means keeps its k and its ids.
    Returns the activity per segment, how many segments moved, and the reason."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    ids = np.unique(activity[activity >= 0])
    if len(ids) < 2:
        return activity, 0, "k-means refinement: fewer than 2 activities"
    x = l2_normalise(np.asarray(fused, np.float32))
    cent = np.stack([x[activity == a].mean(axis=0) for a in ids.tolist()])
    if len(x) > 200_000:
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(n_clusters=len(ids), init=cent, n_init=1, max_iter=max_iter, batch_size=8192, random_state=seed)
    else:
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=len(ids), init=cent, n_init=1, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():  # rows alike to the last digit (an ablation of an unobserved cue): fewer distinct than k
        warnings.simplefilter("ignore", ConvergenceWarning)
        lab = km.fit_predict(x)
    out = ids[lab].astype(np.int32)
    moved = int((out != activity).sum())
    return out, moved, (f"k-means from the {len(ids)} activities' centroids (cluster.refine=kmeans): {moved} of {len(x)} "
                        "segments moved to a nearer activity")
