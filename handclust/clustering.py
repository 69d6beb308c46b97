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
    clusteredness: float  # 1 - (mean kNN distance / mean random-pair distance)
    clip_excess: float  # excess share of same-clip neighbours over chance, in [0, 1]
    weight: float
    coverage: float = 1.0  # share of segments that observed this modality (sparse ones: hands / body seen)


def observed_rows(x: npt.NDArray[np.floating], observed_index: int) -> npt.NDArray[np.bool_]:
    """``(n,)``: rows whose ``observed_index`` column is > 0 (every row when the index is -1: a dense modality)."""
    x = np.asarray(x)
    if observed_index < 0 or x.shape[1] <= observed_index:
        return np.ones(len(x), bool)
    return np.nan_to_num(x[:, observed_index].astype(np.float64)) > 0


@dataclass
class ModalityTransform:
    """What :func:`prepare_modality` learnt from one modality, to apply to new segments."""

    mean: npt.NDArray[np.float64]  # (d,)
    scale: npt.NDArray[np.float64]  # (d,)
    components: npt.NDArray[np.float64]  # (r, d): PCA directions; identity when d <= dims
    observed_index: int = -1  # sparse modality: column that is 0 where the segment saw nothing (-1: dense)

    def observed(self, x: npt.NDArray[np.floating]) -> npt.NDArray[np.bool_]:
        """``(n,)``: rows that observed this modality (all rows of a dense one)."""
        return observed_rows(x, self.observed_index)

    def __call__(self, x: npt.NDArray[np.floating]) -> F32:
        x = np.nan_to_num(np.asarray(x, np.float64))
        if x.shape[1] != len(self.mean):
            raise ValueError(f"descriptor has {x.shape[1]} dims, the fitted model {len(self.mean)}: "
                             "the new footage was described with another feature config")
        out = l2_normalise(((x - self.mean) / self.scale) @ self.components.T)
        # A segment that saw no hand and no body has no position in the pose space: a zero block
        # leaves its distances to everything to the other modalities.
        out[~self.observed(x)] = 0.0
        return out


@dataclass
class Fusion:
    fused: F32  # (n_segments, dim), L2-normalised
    scores: dict[str, ModalityScore] = field(default_factory=dict)
    transforms: dict[str, ModalityTransform] = field(default_factory=dict)

    def transform(self, modalities: dict[str, npt.NDArray[np.floating]]) -> F32:
        """Fuse new segments' descriptors with the parameters fitted on this run's segments."""
        missing = set(self.transforms) - set(modalities)
        if missing:
            raise ValueError(f"new segments lack modalities {sorted(missing)} that the fitted model uses")
        return l2_normalise(np.hstack([self.transforms[m](modalities[m]) * np.sqrt(self.scores[m].weight) for m in self.transforms]))

    def save(self, path: Any) -> None:  # a path or a binary file object
        arrays: dict[str, Any] = {}
        for m, t in self.transforms.items():
            arrays[f"{m}.mean"], arrays[f"{m}.scale"], arrays[f"{m}.components"] = t.mean, t.scale, t.components
            arrays[f"{m}.observed_index"] = np.array(t.observed_index)
            sc = self.scores[m]
            arrays[f"{m}.score"] = np.array([sc.clusteredness, sc.clip_excess, sc.weight, sc.coverage])
        np.savez(path, modalities=np.array(list(self.transforms)), **arrays)

    @classmethod
    def load(cls, path: Any) -> Fusion:
        z = np.load(path, allow_pickle=False)
        mods = [str(m) for m in z["modalities"]]
        transforms = {m: ModalityTransform(z[f"{m}.mean"], z[f"{m}.scale"], z[f"{m}.components"],
                                           int(z[f"{m}.observed_index"]) if f"{m}.observed_index" in z else -1) for m in mods}
        scores = {m: ModalityScore(*map(float, z[f"{m}.score"])) for m in mods}
        return cls(np.zeros((0, 0), np.float32), scores, transforms)


def fit_modality(x: npt.NDArray[np.floating], dims: int, observed_index: int = -1) -> ModalityTransform:
    """Column mean/scale and the top ``dims`` principal directions of the standardised columns.

    For a sparse modality (``observed_index`` >= 0) they are fitted on the rows that observed it.
    """
    x = np.nan_to_num(np.asarray(x, np.float64))
    seen = observed_rows(x, observed_index)
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
    return ModalityTransform(mean, scale, comps, observed_index)


def prepare_modality(x: npt.NDArray[np.floating], dims: int) -> F32:
    """Standardise columns, keep the top ``dims`` principal components, L2-normalise rows."""
    return fit_modality(x, dims)(x)


def modality_score(x: F32, clip_ids: npt.NDArray[np.object_], k: int, rng: np.random.Generator) -> tuple[float, float]:
    n = len(x)
    if n < 3:
        return 1.0, 0.0
    idx, dist, _ = knn_graph(x, k, backend="cpu")
    pairs = rng.integers(0, n, size=(min(20_000, n * 20), 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    rand = float((1.0 - (x[pairs[:, 0]] * x[pairs[:, 1]]).sum(axis=1)).mean())
    clustered = float(np.clip(1.0 - dist.mean() / max(rand, 1e-9), 0.0, 1.0))
    _, inv, counts = np.unique(clip_ids, return_inverse=True, return_counts=True)
    if len(counts) < 2:
        return clustered, 0.0
    same = float((inv[idx] == inv[:, None]).mean())
    chance = float(((counts / n) ** 2).sum())
    excess = float(np.clip((same - chance) / max(1.0 - chance, 1e-9), 0.0, 1.0))
    return clustered, excess


def fuse(modalities: dict[str, npt.NDArray[np.floating]], clip_ids: npt.NDArray[np.object_], cfg: ClusterConfig) -> Fusion:
    """Late fusion: each modality reduced and normalised, then weighted by its confidence.

    A modality's weight is how clustered it is on its own (tight neighbourhoods relative to
    random pairs), discounted by how much its neighbourhoods are clip-private (a modality whose
    neighbours all come from the same clip is fingerprinting the camera, not finding work).
    A sparse modality (hands / body keypoints, :data:`handclust.schema.OBSERVED_INDEX`) is scored on
    the segments that observed it, its weight is multiplied by their share (coverage), and the
    segments that observed nothing get a zero block: footage where no hand is ever seen leaves the
    clustering to the other modalities. With ``weighting="equal"`` every observed modality weighs 1.
    Weights are normalised to sum to the number of modalities with a non-zero weight.
    """
    rng = np.random.default_rng(cfg.seed)
    blocks: dict[str, F32] = {}
    scores: dict[str, ModalityScore] = {}
    transforms: dict[str, ModalityTransform] = {}
    n = len(clip_ids)
    # Confidence is a statistic of neighbourhoods: a sample estimates it as well as all segments.
    probe = rng.choice(n, cfg.max_fit_segments, replace=False) if n > cfg.max_fit_segments else np.arange(n)
    for name, x in modalities.items():
        transforms[name] = fit_modality(x, cfg.reduce_dims, schema.OBSERVED_INDEX.get(name, -1))
        blocks[name] = transforms[name](x)
        observed = transforms[name].observed(x)
        coverage = float(observed.mean()) if n else 0.0
        if coverage == 0.0:  # e.g. no hand or body seen in any segment: nothing to weigh
            scores[name] = ModalityScore(0.0, 0.0, 0.0, 0.0)
            continue
        seen = probe[observed[probe]]
        c, e = modality_score(blocks[name][seen], clip_ids[seen], cfg.knn_k, rng)
        raw = max(c * (1.0 - e), 0.02) if cfg.weighting == "confidence" else 1.0
        # A sparse modality speaks only for the segments that saw it: its weight shrinks with coverage.
        scores[name] = ModalityScore(c, e, raw * coverage, coverage)
    total = sum(s.weight for s in scores.values())
    active = sum(1 for s in scores.values() if s.weight > 0)
    for s in scores.values():
        s.weight = s.weight * active / total if total > 0 else 0.0
    fused = np.hstack([blocks[m] * np.sqrt(scores[m].weight) for m in blocks])
    return Fusion(l2_normalise(fused), scores, transforms)


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


def cluster_segments(fused: F32, cfg: ClusterConfig) -> Clustering:
    n = len(fused)
    auto = cfg.min_cluster_size is None
    sampled = n > cfg.max_fit_segments
    n_fit = cfg.max_fit_segments if sampled else n
    mcs = cfg.min_cluster_size or choose_min_cluster_size(n_fit)
    ms = cfg.min_samples or max(2, mcs // 2)
    if sampled:
        # BERTopic's advice at millions of documents: fit on a representative sample, then place
        # every other point through the neighbour graph of the sample.
        fit = np.sort(np.random.default_rng(cfg.seed).choice(n, n_fit, replace=False))
        rest = np.setdiff1d(np.arange(n), fit)
        x, pcs = hdbscan_input(fused[fit], cfg)
        fit_labels, fit_probs, hb = hdbscan_fit(x, mcs, ms, cfg.backend)
        qi, qd, _ = knn_query(fused[fit], fused[rest], cfg.knn_k, cfg.backend)
        rest_labels, rest_share = vote_labels(fit_labels, qi, qd)
        labels = np.empty(n, np.int32)
        probs = np.empty(n, np.float32)
        labels[fit], probs[fit] = fit_labels, fit_probs
        labels[rest], probs[rest] = rest_labels, np.where(rest_labels >= 0, rest_share, 0.0)
        hb += f" (fit on {n_fit} of {n}, rest by kNN vote)"
    else:
        x, pcs = hdbscan_input(fused, cfg)
        labels, probs, hb = hdbscan_fit(x, mcs, ms, cfg.backend)
    knn_i, knn_d, kb = knn_graph(fused, cfg.knn_k, cfg.backend)
    if cfg.assign_noise:
        activity, moved = assign_noise(labels, knn_i, knn_d, l2_normalise(fused))
    else:
        activity, moved = labels.copy(), np.zeros(n, bool)
    k = len(np.unique(labels[labels >= 0]))
    reason = (f"HDBSCAN on {n_fit} segments" + (f" sampled from {n}" if sampled else "")
              + (f" ({pcs} principal components of {fused.shape[1]} fused dims)" if pcs else "") + f" with min_cluster_size={mcs} "
              + ("(0.5 x sqrt(n), at least 3)" if auto else "(set in config)")
              + f", min_samples={ms}: {k} clusters survived the stability selection (eom)")
    return Clustering(labels, probs, activity, moved, knn_i, knn_d, mcs, ms, {"hdbscan": hb, "knn": kb}, reason)
