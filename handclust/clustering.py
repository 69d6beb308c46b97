"""Late fusion of segment descriptors and joint clustering of all segments of all clips.

Four short steps: fuse (per-modality standardise, reduce, L2-normalise, weight by confidence),
cluster (HDBSCAN; the cluster count follows the data), neighbours (a kNN graph over the fused
vectors, used to assign noise to its nearest activity), map (2-D layout for the report).

Backends sit behind one small function each: :func:`hdbscan_fit`, :func:`umap_fit`,
:func:`knn_graph`. Each picks cuML / FAISS-GPU when asked for (``backend="gpu"``) or when
``"auto"`` finds a GPU and the library, scikit-learn / umap-learn / faiss-cpu otherwise, and
returns the name of what it used so the run can record it. Asking for ``"gpu"`` without one is an
error, never a silent fallback.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from handclust import schema
from handclust.config import ClusterConfig
from handclust.segmentation import pca_reduce

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]


class BackendError(RuntimeError):
    pass


def gpu_available() -> bool:
    try:
        import cuml  # noqa: F401
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:
        return False


def resolve_backend(backend: str) -> str:
    if backend == "cpu":
        return "cpu"
    have = gpu_available()
    if backend == "gpu" and not have:
        raise BackendError("cluster.backend=gpu but cuML/CuPy or a CUDA device is missing; "
                           "install the [gpu] extra on a GPU machine or set cluster.backend=cpu")
    return "gpu" if have else "cpu"


def l2_normalise(x: npt.NDArray[np.floating]) -> F32:
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 1e-12, n, 1.0)


# --------------------------------------------------------------------------- neighbours


def knn_graph(x: npt.NDArray[np.floating], k: int, backend: str = "auto") -> tuple[npt.NDArray[np.int64], F32, str]:
    """k nearest neighbours (cosine, self excluded) of every row: ``(n, k)`` indices and distances."""
    import faiss

    x = l2_normalise(x)
    n, d = x.shape
    k_eff = min(k, n - 1)
    if k_eff < 1:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32), "none"
    use_gpu = resolve_backend(backend) == "gpu" and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    index: Any
    if n > 200_000:
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 64
        name = "faiss-cpu-hnsw"
    else:
        index = faiss.IndexFlatIP(d)
        name = "faiss-cpu-flat"
    if use_gpu:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, faiss.IndexFlatIP(d))
        name = "faiss-gpu-flat"
    index.add(x)
    sim, idx = index.search(x, k_eff + 1)
    # Drop self: it is usually first, but ties (duplicates) can put it elsewhere; where self is
    # missing from the k+1 (many exact duplicates), drop the last neighbour instead.
    is_self = idx == np.arange(n)[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    is_self &= np.cumsum(is_self, axis=1) == 1
    keep = ~is_self
    out_i = idx[keep].reshape(n, k_eff).astype(np.int64)
    out_d = (1.0 - sim[keep].reshape(n, k_eff)).astype(np.float32)
    return out_i, out_d, name


def knn_query(reference: npt.NDArray[np.floating], queries: npt.NDArray[np.floating], k: int,
              backend: str = "auto") -> tuple[npt.NDArray[np.int64], F32, str]:
    """k nearest ``reference`` rows (cosine) of each query row: ``(n_q, k)`` indices and distances."""
    import faiss

    ref, q = l2_normalise(reference), l2_normalise(queries)
    k_eff = min(k, len(ref))
    d = ref.shape[1]
    use_gpu = resolve_backend(backend) == "gpu" and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    index: Any = faiss.IndexFlatIP(d)
    name = "faiss-cpu-flat"
    if use_gpu:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        name = "faiss-gpu-flat"
    elif len(ref) > 200_000:
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 64
        name = "faiss-cpu-hnsw"
    index.add(ref)
    sim, idx = index.search(q, k_eff)
    return idx.astype(np.int64), (1.0 - sim).astype(np.float32), name


def vote_labels(ref_labels: npt.NDArray[np.int32], idx: npt.NDArray[np.int64], dist: F32,
                ) -> tuple[npt.NDArray[np.int32], F32]:
    """Label each query by the 1/distance-weighted vote of its reference neighbours (noise votes
    too: a query among noise stays noise); returns labels and the winning share of the vote."""
    w = 1.0 / (dist.astype(np.float64) + 1e-3)
    lab = ref_labels[idx]
    classes = np.unique(lab)
    scores = np.stack([(w * (lab == c)).sum(axis=1) for c in classes], axis=1)
    best = scores.argmax(axis=1)
    share = scores[np.arange(len(best)), best] / np.maximum(scores.sum(axis=1), 1e-12)
    return classes[best].astype(np.int32), share.astype(np.float32)


# --------------------------------------------------------------------------- fusion


@dataclass
class ModalityScore:
    clusteredness: float  # within clips, away from temporal neighbours: 1 - (kNN distance / random-pair distance)
    clip_excess: float  # share of non-adjacent neighbours from the same clip beyond chance, in [0, 1]
    weight: float
    coverage: float = 1.0  # share of segments that observed this modality (sparse ones: hands / body seen)
    clip_normalised: bool = False  # standardised within each clip before fusion (per-clip style removed)


def observed_rows(x: npt.NDArray[np.floating], observed_index: int) -> npt.NDArray[np.bool_]:
    """``(n,)``: rows whose ``observed_index`` column is > 0 (every row when the index is -1: a dense modality)."""
    x = np.asarray(x)
    if observed_index < 0 or x.shape[1] <= observed_index:
        return np.ones(len(x), bool)
    return np.nan_to_num(x[:, observed_index].astype(np.float64)) > 0


def clip_positions(clip_ids: npt.NDArray[np.object_]) -> npt.NDArray[np.int64]:
    """``(n,)``: each row's running index within its clip, in row order (rows of a clip in time order)."""
    _, inv = np.unique(clip_ids, return_inverse=True)
    pos = np.zeros(len(inv), np.int64)
    seen: dict[int, int] = {}
    for i, c in enumerate(inv.tolist()):
        pos[i] = seen.get(c, 0)
        seen[c] = pos[i] + 1
    return pos


def normalise_within_clips(x: npt.NDArray[np.floating], clip_ids: npt.NDArray[np.object_],
                           rows: npt.NDArray[np.bool_] | None = None, prior: float = 2.0) -> npt.NDArray[np.float64]:
    """Remove each clip's style: subtract the clip's mean and divide by its overall spread.

    Clip statistics are shrunk towards the corpus' by ``prior`` pseudo-segments, so a clip of one
    or two segments is not flattened to zero. ``rows`` (default all) are the rows whose statistics
    count (a sparse modality's observed rows); every row is transformed.
    """
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


@dataclass
class ModalityTransform:
    """What :func:`fit_modality` learnt from one modality, to apply to new segments."""

    mean: npt.NDArray[np.float64]  # (d,)
    scale: npt.NDArray[np.float64]  # (d,)
    components: npt.NDArray[np.float64]  # (r, d): PCA directions; identity when d <= dims
    observed_index: int = -1  # sparse modality: column that is 0 where the segment saw nothing (-1: dense)
    clip_normalised: bool = False  # new segments are standardised within their own clip first

    def observed(self, x: npt.NDArray[np.floating]) -> npt.NDArray[np.bool_]:
        """``(n,)``: rows that observed this modality (all rows of a dense one)."""
        return observed_rows(x, self.observed_index)

    def __call__(self, x: npt.NDArray[np.floating], clip_ids: npt.NDArray[np.object_] | None = None,
                 measured: npt.NDArray[np.bool_] | None = None) -> F32:
        x = np.nan_to_num(np.asarray(x, np.float64))
        if x.shape[1] != len(self.mean):
            raise ValueError(f"descriptor has {x.shape[1]} dims, the fitted model {len(self.mean)}: "
                             "the new footage was described with another feature config")
        seen = self.observed(x) & (True if measured is None else measured)
        if self.clip_normalised:
            if clip_ids is None:
                raise ValueError("this modality is normalised within clips: pass the segments' clip ids")
            x = normalise_within_clips(x, clip_ids, seen)
        out = l2_normalise(((x - self.mean) / self.scale) @ self.components.T)
        # A segment that saw no hand and no body (or could not measure this modality, e.g. rhythm of
        # a 0.5 fps source) has no position in this space: a zero block leaves its distances to the
        # other modalities.
        out[~seen] = 0.0
        return out


@dataclass
class Fusion:
    fused: F32  # (n_segments, dim), L2-normalised
    scores: dict[str, ModalityScore] = field(default_factory=dict)
    transforms: dict[str, ModalityTransform] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # per modality: why this weight and normalisation

    def transform(self, modalities: dict[str, npt.NDArray[np.floating]], clip_ids: npt.NDArray[np.object_] | None = None,
                  measured: dict[str, npt.NDArray[np.bool_]] | None = None) -> F32:
        """Fuse new segments' descriptors with the parameters fitted on this run's segments."""
        missing = set(self.transforms) - set(modalities)
        if missing:
            raise ValueError(f"new segments lack modalities {sorted(missing)} that the fitted model uses")
        measured = measured or {}
        return l2_normalise(np.hstack([self.transforms[m](modalities[m], clip_ids, measured.get(m)) * np.sqrt(self.scores[m].weight)
                                       for m in self.transforms]))

    def save(self, path: Any) -> None:  # a path or a binary file object
        arrays: dict[str, Any] = {}
        for m, t in self.transforms.items():
            arrays[f"{m}.mean"], arrays[f"{m}.scale"], arrays[f"{m}.components"] = t.mean, t.scale, t.components
            arrays[f"{m}.observed_index"] = np.array(t.observed_index)
            arrays[f"{m}.clip_normalised"] = np.array(t.clip_normalised)
            sc = self.scores[m]
            arrays[f"{m}.score"] = np.array([sc.clusteredness, sc.clip_excess, sc.weight, sc.coverage])
        np.savez(path, modalities=np.array(list(self.transforms)), **arrays)

    @classmethod
    def load(cls, path: Any) -> Fusion:
        z = np.load(path, allow_pickle=False)
        mods = [str(m) for m in z["modalities"]]
        transforms = {m: ModalityTransform(z[f"{m}.mean"], z[f"{m}.scale"], z[f"{m}.components"],
                                           int(z[f"{m}.observed_index"]) if f"{m}.observed_index" in z else -1,
                                           bool(z[f"{m}.clip_normalised"]) if f"{m}.clip_normalised" in z else False)
                      for m in mods}
        scores = {m: ModalityScore(*map(float, z[f"{m}.score"]), clip_normalised=transforms[m].clip_normalised) for m in mods}
        return cls(np.zeros((0, 0), np.float32), scores, transforms)


def fit_modality(x: npt.NDArray[np.floating], dims: int, observed_index: int = -1,
                 rows: npt.NDArray[np.bool_] | None = None, clip_normalised: bool = False) -> ModalityTransform:
    """Column mean/scale and the top ``dims`` principal directions of the standardised columns.

    For a sparse modality (``observed_index`` >= 0, or ``rows`` given) they are fitted on the rows
    that observed it. ``x`` is already normalised within clips when ``clip_normalised``.
    """
    x = np.nan_to_num(np.asarray(x, np.float64))
    seen = observed_rows(x, observed_index) if rows is None else rows
    if seen.any() and not seen.all():
        x = x[seen]
    mean = x.mean(axis=0)
    sd = x.std(axis=0)
    scale = np.where(sd > 1e-9, sd, 1.0)
    z = (x - mean) / scale
    if z.shape[1] <= dims:
        comps = np.eye(z.shape[1])
    else:
        sample = z if len(z) <= 50_000 else z[np.random.default_rng(0).choice(len(z), 50_000, replace=False)]
        _, _, vt = np.linalg.svd(sample - sample.mean(axis=0), full_matrices=False)
        comps = vt[:dims]
    return ModalityTransform(mean, scale, comps, observed_index, clip_normalised)


def within_clip_clusteredness(x: F32, clip_ids: npt.NDArray[np.object_], pos: npt.NDArray[np.int64], k: int, gap: int,
                              rng: np.random.Generator, max_per_clip: int = 400, n_null: int = 8) -> tuple[float, int]:
    """How much structure a modality has inside clips, away from temporal neighbours, and on how
    many segments it was measured (clips too short to have far neighbours give none).

    For each segment, the mean cosine distance to its ``k`` nearest segments of the same clip that
    are more than ``gap`` segments away in time, against the mean distance of random such pairs.
    A camera's colour cast is the same in every segment of a clip: no structure (about 0). An
    activity that recurs within a clip: tight neighbours (towards 1). Adjacent segments are left
    out because one activity continuing, or a slow drift of light, makes them similar anyway. The
    score is relative to the same data with each column shuffled within its clip (0: no more
    structure than chance), averaged over ``n_null`` shuffles: one shuffle of a few dozen
    segments moved the score of the same data between 0 and 0.42.
    """
    c_obs, count = _near_vs_random(x, clip_ids, pos, k, gap, rng, max_per_clip)
    if count == 0:
        return 0.0, 0
    # Null: every column shuffled within its clip keeps each clip's spread but no structure; the
    # k nearest of a few dozen random points are closer than random pairs too, by chance alone.
    groups = [np.flatnonzero(clip_ids == c) for c in np.unique(clip_ids)]
    c_null = float(np.mean([_near_vs_random(l2_normalise(_shuffle_columns(x, groups, rng)), clip_ids, pos, k, gap, rng,
                                            max_per_clip)[0] for _ in range(n_null)]))
    return float(np.clip((c_obs - c_null) / max(1.0 - c_null, 1e-9), 0.0, 1.0)), count


def _shuffle_columns(x: npt.NDArray[np.floating], groups: list[npt.NDArray[np.int64]], rng: np.random.Generator) -> F32:
    """``x`` with every column permuted independently within each group of rows."""
    out = np.array(x, dtype=np.float32, copy=True)
    for idx in groups:
        perm = np.argsort(rng.random((len(idx), out.shape[1])), axis=0)
        out[idx] = np.take_along_axis(out[idx], perm, axis=0)
    return out


def _near_vs_random(x: F32, clip_ids: npt.NDArray[np.object_], pos: npt.NDArray[np.int64], k: int, gap: int,
                    rng: np.random.Generator, max_per_clip: int) -> tuple[float, int]:
    near_sum, rand_sum, count = 0.0, 0.0, 0
    for c in np.unique(clip_ids):
        idx = np.flatnonzero(clip_ids == c)
        if len(idx) > max_per_clip:
            idx = np.sort(rng.choice(idx, max_per_clip, replace=False))
        if len(idx) < 2 * gap + 3:
            continue
        xc = x[idx].astype(np.float64)
        d = 1.0 - xc @ xc.T
        far = np.abs(pos[idx][:, None] - pos[idx][None, :]) > gap
        rows = far.sum(axis=1) >= 2
        if not rows.any():
            continue
        d_far = np.where(far, d, np.inf)
        # A quarter of the candidates at most: the nearest 10 of 12 are no nearer than random.
        kk = int(max(1, min(k, far.sum(axis=1)[rows].min() // 4)))
        nearest = np.sort(d_far[rows], axis=1)[:, :kk].mean(axis=1)
        rand = np.where(far, d, 0.0)[rows].sum(axis=1) / far[rows].sum(axis=1)
        near_sum += float(nearest.sum())
        rand_sum += float(rand.sum())
        count += int(rows.sum())
    if count == 0 or rand_sum <= 1e-12:
        return 0.0, 0
    return float(np.clip(1.0 - near_sum / rand_sum, 0.0, 1.0)), count


def global_clusteredness(x: F32, k: int, rng: np.random.Generator, n_null: int = 8) -> float:
    """Structure across the corpus: 1 - (mean distance to the ``k`` nearest segments anywhere) /
    (mean distance of random pairs), relative to the same data with every column shuffled (0: no
    more than chance). Without the null, the nearest of a few dozen points in 12 dims look close
    for any data: a rhythm descriptor at chance level scored 0.78, above the scene's 0.55."""
    n = len(x)
    if n < 3:
        return 0.0
    kk = min(k, max(1, (n - 1) // 4))

    def near_vs_random(z: F32) -> float:
        _, dist, _ = knn_graph(z, kk, backend="cpu")
        rand = float((1.0 - (z[pairs[:, 0]] * z[pairs[:, 1]]).sum(axis=1)).mean())
        return float(np.clip(1.0 - dist.mean() / max(rand, 1e-9), 0.0, 1.0))

    pairs = rng.integers(0, n, size=(min(20_000, n * 20), 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    c_obs = near_vs_random(x)
    c_null = float(np.mean([near_vs_random(l2_normalise(_shuffle_columns(x, [np.arange(n)], rng))) for _ in range(n_null)]))
    return float(np.clip((c_obs - c_null) / max(1.0 - c_null, 1e-9), 0.0, 1.0))


def clip_excess(x: F32, clip_ids: npt.NDArray[np.object_], pos: npt.NDArray[np.int64], k: int, gap: int) -> float:
    """Share of a segment's nearest neighbours from its own clip beyond chance, in [0, 1], counting
    only neighbours that temporal adjacency does not explain (same clip, more than ``gap`` segments
    away, or another clip). 1: every clip is an island (a camera fingerprint, or clips of wholly
    different work); 0: neighbours come from the clips in proportion to their size."""
    n = len(x)
    _, inv, counts = np.unique(clip_ids, return_inverse=True, return_counts=True)
    if len(counts) < 2 or n < 3:
        return 0.0
    idx, _, _ = knn_graph(x, min(n - 1, k + 2 * gap), backend="cpu")
    same = inv[idx] == inv[:, None]
    adjacent = same & (np.abs(pos[idx] - pos[:, None]) <= gap)
    keep = ~adjacent
    n_keep = keep.sum(axis=1)
    ok = n_keep > 0
    if not ok.any():
        return 0.0
    share = float(((same & keep).sum(axis=1)[ok] / n_keep[ok]).mean())
    # Chance: a random non-adjacent segment is from the same clip in proportion to the clip's size.
    others = np.maximum(counts[inv] - 1 - 2 * gap, 0)
    chance = float((others / np.maximum(others + (n - counts[inv]), 1)).mean())
    return float(np.clip((share - chance) / max(1.0 - chance, 1e-9), 0.0, 1.0))


def fuse(modalities: dict[str, npt.NDArray[np.floating]], clip_ids: npt.NDArray[np.object_], cfg: ClusterConfig,
         measured: dict[str, npt.NDArray[np.bool_]] | None = None) -> Fusion:
    """Late fusion: each modality normalised (within clips when its clips are islands), reduced,
    L2-normalised, then weighted by its confidence on this data.

    Rows of each clip must be in time order (``seg_idx``), as the runners write them.

    - **Confidence** is structure within clips away from temporal neighbours
      (:func:`within_clip_clusteredness`): a modality that only encodes each camera's colour has
      none and loses its weight; one that separates two trades keeps it, because each trade's
      activities still recur inside its own clip. It is shrunk towards the modalities' mean by
      ``cluster.weight_prior_segments`` pseudo-segments, so scores from a handful of segments stay
      near equal weights instead of exploding.
    - **Per-clip normalisation** (``cluster.clip_normalise``): ``auto`` standardises a modality
      within each clip when there are at least three clips and its ``clip_excess`` (adjacency
      discounted) reaches ``cluster.clip_excess_threshold`` (0.1): people, cameras and light
      differ per clip. On sample footage v2 the clips were far from islands (excess 0.1-0.2) and
      normalising still raised ARI on 3 of 3 development sets; where clip identity explains no
      neighbours (excess about 0) it only adds the noise of each clip's estimated mean. With two clips, differences between
      clips cannot be told apart from two kinds of work, so they stay. This acts with a single
      modality too. It hurts where every clip holds one activity: set it ``off`` there.
    - A sparse modality (hands / body keypoints, :data:`handclust.schema.OBSERVED_INDEX`), or
      rows a modality could not measure (``measured`` False, e.g. rhythm of a 0.5 fps source), is
      scored on the rows that observed it, weighted by their share (coverage), and the other rows
      get a zero block. With ``weighting="equal"`` every observed modality weighs 1 (x coverage).
      Weights are normalised to sum to the number of modalities with a non-zero weight.
    """
    rng = np.random.default_rng(cfg.seed)
    blocks: dict[str, F32] = {}
    scores: dict[str, ModalityScore] = {}
    transforms: dict[str, ModalityTransform] = {}
    reasons: dict[str, str] = {}
    n = len(clip_ids)
    clip_ids = np.asarray(clip_ids, dtype=object)
    pos = clip_positions(clip_ids)
    n_clips = len(np.unique(clip_ids))
    measured = measured or {}
    # Confidence is a statistic of neighbourhoods: a sample estimates it as well as all segments.
    probe = np.sort(rng.choice(n, cfg.max_fit_segments, replace=False)) if n > cfg.max_fit_segments else np.arange(n)
    raw: dict[str, tuple[float, int]] = {}
    for name, x in modalities.items():
        x = np.nan_to_num(np.asarray(x, np.float64))
        observed = observed_rows(x, schema.OBSERVED_INDEX.get(name, -1))
        if name in measured:
            observed = observed & np.asarray(measured[name], bool)
        coverage = float(observed.mean()) if n else 0.0
        t = fit_modality(x, cfg.reduce_dims, schema.OBSERVED_INDEX.get(name, -1), rows=observed)
        block = t(x, clip_ids, observed)
        seen = probe[observed[probe]]
        excess = clip_excess(block[seen], clip_ids[seen], pos[seen], cfg.knn_k, cfg.adjacent_gap) if len(seen) > 2 else 0.0
        normalise = cfg.clip_normalise == "on" or (cfg.clip_normalise == "auto" and n_clips >= 3 and excess >= cfg.clip_excess_threshold)
        if cfg.clip_normalise == "on":
            why = "normalised within clips (cluster.clip_normalise=on)"
        elif normalise:
            why = (f"normalised within clips: {n_clips} clips (clip excess {excess:.2f}, threshold "
                   f"{cfg.clip_excess_threshold:g}): per-clip style (people, cameras, light) removed")
        elif cfg.clip_normalise == "auto" and n_clips < 3:
            why = f"kept as is: with {n_clips} clip(s), differences between clips cannot be told apart from different work"
        else:
            why = f"kept as is (clip excess {excess:.2f}" + (", cluster.clip_normalise=off)" if cfg.clip_normalise == "off" else ")")
        if normalise:
            xn = normalise_within_clips(x, clip_ids, observed)
            t = fit_modality(xn, cfg.reduce_dims, schema.OBSERVED_INDEX.get(name, -1), rows=observed, clip_normalised=True)
            block = t(x, clip_ids, observed)
        transforms[name], blocks[name] = t, block
        if coverage == 0.0:  # e.g. no hand or body seen in any segment: nothing to weigh
            scores[name] = ModalityScore(0.0, excess, 0.0, 0.0, normalise)
            reasons[name] = "no segment observed it: weight 0"
            continue
        c_in, _ = within_clip_clusteredness(block[seen], clip_ids[seen], pos[seen], cfg.knn_k, cfg.adjacent_gap, rng)
        # Clips too short for far neighbours inside them (a few segments each) say little there:
        # structure across the corpus counts too, discounted by how clip-private it is.
        c = max(c_in, global_clusteredness(block[seen], cfg.knn_k, rng) * (1.0 - excess))
        raw[name] = (c, len(seen))
        scores[name] = ModalityScore(c, excess, 0.0, coverage, normalise)
        reasons[name] = why
    if raw:
        prior_mean = float(np.mean([c for c, _ in raw.values()]))
        n0 = cfg.weight_prior_segments
        for name, (c, m) in raw.items():
            conf = (m * c + n0 * prior_mean) / (m + n0)  # shrunk towards the mean on few segments
            w = max(conf, 0.02) if cfg.weighting == "confidence" else 1.0
            # A sparse modality speaks only for the segments that saw it: its weight shrinks with coverage.
            scores[name].weight = w * scores[name].coverage
    total = sum(s.weight for s in scores.values())
    active = sum(1 for s in scores.values() if s.weight > 0)
    for s in scores.values():
        s.weight = s.weight * active / total if total > 0 else 0.0
    fused = np.hstack([blocks[m] * np.sqrt(scores[m].weight) for m in blocks])
    return Fusion(l2_normalise(fused), scores, transforms, reasons)


# --------------------------------------------------------------------------- clustering


def choose_min_cluster_size(n_segments: int) -> int:
    """Smallest group worth calling an activity: grows as sqrt(n), at least 3.

    sqrt keeps an activity that fills ~1 % of a large corpus discoverable while a 60-segment
    demo still needs 4 segments to agree.
    """
    return max(3, int(round(0.5 * math.sqrt(max(n_segments, 1)))))


def hdbscan_fit(x: npt.NDArray[np.floating], min_cluster_size: int, min_samples: int, backend: str = "auto") -> tuple[npt.NDArray[np.int32], F32, str]:
    """HDBSCAN labels (-1 = noise) and membership probabilities of L2-normalised rows."""
    x = l2_normalise(x)
    if len(x) < max(min_cluster_size, 2):
        return np.full(len(x), -1, np.int32), np.zeros(len(x), np.float32), "none (too few segments)"
    if resolve_backend(backend) == "gpu":
        import cupy as cp
        from cuml.cluster import HDBSCAN as CuHDBSCAN

        model = CuHDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples)
        labels = cp.asnumpy(model.fit_predict(cp.asarray(x)))
        probs = cp.asnumpy(model.probabilities_)
        return labels.astype(np.int32), probs.astype(np.float32), "cuml"
    from sklearn.cluster import HDBSCAN

    # Euclidean on unit vectors orders pairs exactly as cosine distance does, and allows trees.
    model = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, copy=True)
    labels = model.fit_predict(x.astype(np.float64))
    return labels.astype(np.int32), model.probabilities_.astype(np.float32), "sklearn"


def umap_fit(x: npt.NDArray[np.floating], method: str = "umap", backend: str = "auto", seed: int = 0) -> tuple[F32, str]:
    """2-D layout ``(n, 2)`` for the segment map."""
    x = l2_normalise(x)
    n = len(x)
    if method == "pca" or n < 6:
        if method != "pca":
            log.warning("2-D map: %d segments are too few for UMAP, using PCA", n)
        y = pca_reduce(x, 2)
        if y.shape[1] < 2:
            y = np.hstack([y, np.zeros((n, 2 - y.shape[1]))])
        return y.astype(np.float32), "pca"
    nn = min(15, n - 1)
    if resolve_backend(backend) == "gpu":
        import cupy as cp
        from cuml.manifold import UMAP as CuUMAP

        y = CuUMAP(n_neighbors=nn, n_components=2, random_state=seed).fit_transform(cp.asarray(x))
        return cp.asnumpy(y).astype(np.float32), "cuml-umap"
    import warnings

    import umap

    with warnings.catch_warnings():  # "n_jobs overridden by random_state": we want reproducible maps
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        y = umap.UMAP(n_neighbors=nn, n_components=2, metric="euclidean", random_state=seed, init="spectral" if n > 20 else "random").fit_transform(x)
    return np.asarray(y, np.float32), "umap-learn"


def assign_noise(labels: npt.NDArray[np.int32], knn_idx: npt.NDArray[np.int64], knn_dist: F32, x: F32) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.bool_]]:
    """Give each noise point the cluster its non-noise neighbours vote for (1/distance weights);
    with no such neighbour, the cluster with the nearest centroid."""
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
    backends: dict[str, str]
    reason: str

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


def choose_by_stability(x: npt.NDArray[np.floating], base: int, backend: str, min_samples: int | None,
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


def stability_report(x: npt.NDArray[np.floating], labels: npt.NDArray[np.int32], mcs: int, backend: str,
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


def cluster_segments(fused: F32, cfg: ClusterConfig) -> Clustering:
    n = len(fused)
    auto = cfg.min_cluster_size is None
    sampled = n > cfg.max_fit_segments
    n_fit = cfg.max_fit_segments if sampled else n
    base = cfg.min_cluster_size or choose_min_cluster_size(n_fit)
    fit = np.sort(np.random.default_rng(cfg.seed).choice(n, n_fit, replace=False)) if sampled else np.arange(n)
    x, pcs = hdbscan_input(fused[fit], cfg)
    if auto and cfg.stability and n_fit >= 8:
        fit_labels, fit_probs, hb, mcs, ms, why = choose_by_stability(x, base, cfg.backend, cfg.min_samples)
    else:
        mcs = base
        ms = cfg.min_samples or max(2, mcs // 2)
        fit_labels, fit_probs, hb = hdbscan_fit(x, mcs, ms, cfg.backend)
        why = f"min_cluster_size={mcs} " + ("(0.5 x sqrt(n), at least 3)" if auto else "(set in config)")
        if auto and n_fit >= 8 and n_fit <= STABILITY_REPORT_MAX:
            why += "; " + stability_report(x, fit_labels, mcs, cfg.backend, cfg.min_samples)
    if sampled:
        # BERTopic's advice at millions of documents: fit on a representative sample, then place
        # every other point through the neighbour graph of the sample.
        rest = np.setdiff1d(np.arange(n), fit)
        qi, qd, _ = knn_query(fused[fit], fused[rest], cfg.knn_k, cfg.backend)
        rest_labels, rest_share = vote_labels(fit_labels, qi, qd)
        labels = np.empty(n, np.int32)
        probs = np.empty(n, np.float32)
        labels[fit], probs[fit] = fit_labels, fit_probs
        labels[rest], probs[rest] = rest_labels, np.where(rest_labels >= 0, rest_share, 0.0)
        hb += f" (fit on {n_fit} of {n}, rest by kNN vote)"
    else:
        labels, probs = fit_labels, fit_probs
    knn_i, knn_d, kb = knn_graph(fused, cfg.knn_k, cfg.backend)
    if cfg.assign_noise:
        activity, moved = assign_noise(labels, knn_i, knn_d, l2_normalise(fused))
    else:
        activity, moved = labels.copy(), np.zeros(n, bool)
    k = len(np.unique(labels[labels >= 0]))
    reason = (f"HDBSCAN on {n_fit} segments" + (f" sampled from {n}" if sampled else "")
              + (f" ({pcs} principal components of {fused.shape[1]} fused dims)" if pcs else "") + f" with {why}"
              + f", min_samples={ms}: {k} clusters survived HDBSCAN's excess-of-mass selection")
    return Clustering(labels, probs, activity, moved, knn_i, knn_d, mcs, ms, {"hdbscan": hb, "knn": kb}, reason)


@dataclass
class Grouping:
    """Fusion, clustering and the temporal model of one set of segments: what a run, an ablation
    and ``segment-features`` all compute the same way."""

    fusion: Fusion
    clustering: Clustering
    temporal_reason: str | None
    switches: tuple[int, int] | None  # activity changes within clips before / after the temporal model


def group_segments(modalities: dict[str, npt.NDArray[np.floating]], clip_ids: npt.NDArray[np.object_],
                   durations_s: npt.NDArray[np.floating], cfg: ClusterConfig,
                   measured: dict[str, npt.NDArray[np.bool_]] | None = None,
                   extra_block: tuple[F32, float] | None = None) -> Grouping:
    """Fuse, cluster jointly, then (``cfg.temporal``) smooth each clip's timeline.

    Rows of a clip must be in time order. ``extra_block`` is ``(vectors, weight)`` appended to the
    fused vectors before clustering (relative time in ``segment-features --time-weight``).
    """
    from handclust.temporal import smooth_timelines

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
    clustering = cluster_segments(fused, cfg)
    if not cfg.temporal:
        return Grouping(fusion, clustering, None, None)
    # Votes from at most min_cluster_size neighbours: a cluster may be that small, and a wider vote
    # would let a bigger neighbouring cluster outvote the members of a small one.
    votes = clustering.knn_idx[:, : max(2, min(cfg.knn_k, clustering.min_cluster_size))]
    tl = smooth_timelines(clustering.activity, clustering.labels, votes, np.asarray(clip_ids, dtype=object),
                          durations_s, cfg.mean_run_s)
    clustering.activity = tl.activity
    clustering.reassigned = tl.activity != clustering.labels
    return Grouping(fusion, clustering, tl.reason, (tl.switches_before, tl.switches_after))
