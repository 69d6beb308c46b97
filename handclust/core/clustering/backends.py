"""Clustering sub-models as small objects behind one protocol each, and the resolver that picks them.

Three protocols (STYLE.md, habit 5; BERTopic's injectable models); an implementation may carry a
``name`` for run.json (else its class name is recorded):

- :class:`Clusterer`: ``fit(x, min_cluster_size, min_samples) -> ClusterFit`` (labels, -1 = noise,
  and membership probabilities). scikit-learn's HDBSCAN on CPU, cuML's on GPU.
- :class:`Reducer`: ``fit_transform(x) -> (n, 2)`` for the segment map. umap-learn, cuML UMAP, PCA.
- :class:`NeighbourIndex`: ``search(reference, queries, k) -> (indices, cosine distances)``.
  FAISS on CPU or GPU, scikit-learn's NearestNeighbors where FAISS is not installed.

Every input row is L2-normalised by the caller (:mod:`handclust.core.clustering.neighbours`), so inner
product is cosine similarity. :func:`resolve_models` turns ``cluster.backend`` (auto | cpu | gpu)
and ``cluster.map_method`` into objects, fills in what the caller did not pass, and says for each
which one runs and why; the run writes that to ``run.json`` (``clustering.backends`` and
``clustering.backend_reasons``). ``gpu`` without a usable GPU is an error naming the fix; a
fallback (no umap-learn: PCA; no faiss: scikit-learn) is logged and recorded, never silent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from handclust.errors import BackendError as BackendError  # defined with every error in handclust/errors.py

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

HNSW_FROM = 200_000  # reference rows from which FAISS on CPU searches an HNSW graph instead of every row


# --------------------------------------------------------------------------- GPU detection


def gpu_status() -> tuple[bool, str]:
    """Whether cuML and CuPy import and CUDA sees a device, and why not in words.

    Only the failures this check expects are caught: a library that is not installed (ImportError)
    and the CUDA runtime's own errors (no driver, no device). Anything else is a bug and raises.
    """
    try:
        import cupy
    except ImportError as exc:
        return False, f"cuML/CuPy not importable ({exc})"
    cuda_error = cupy.cuda.runtime.CUDARuntimeError
    try:
        import cuml  # noqa: F401  (its import may already talk to the driver)

        n = int(cupy.cuda.runtime.getDeviceCount())
    except ImportError as exc:
        return False, f"cuML/CuPy not importable ({exc})"
    except cuda_error as exc:
        return False, f"CUDA runtime error ({exc})"
    return (n > 0), (f"{n} CUDA device(s)" if n > 0 else "no CUDA device")


def resolve(backend: str) -> tuple[str, str]:
    """``cpu`` or ``gpu`` for ``cluster.backend``, and why in words."""
    if backend == "cpu":
        return "cpu", "cluster.backend=cpu"
    if backend not in ("auto", "gpu"):
        raise BackendError(f"cluster.backend={backend!r}: use auto, cpu or gpu")
    ok, why = gpu_status()
    if backend == "gpu" and not ok:
        raise BackendError(f"cluster.backend=gpu but {why}; install the [gpu] extra on a GPU machine "
                           "(pip install 'handclust[gpu]') or set cluster.backend=cpu")
    if ok:
        return "gpu", f"cluster.backend={backend}: {why}"
    log.info("cluster.backend=auto: clustering on CPU, %s", why)
    return "cpu", f"cluster.backend=auto: {why}"


# --------------------------------------------------------------------------- protocols


@dataclass
class ClusterFit:
    labels: npt.NDArray[np.int32]  # (n,), -1 = noise
    probabilities: F32  # (n,) membership strength in [0, 1]


@runtime_checkable
class Clusterer(Protocol):
    """Density clustering of unit rows; the cluster count follows from the data."""

    def fit(self, x: F32, min_cluster_size: int, min_samples: int) -> ClusterFit: ...


@runtime_checkable
class Reducer(Protocol):
    """A 2-D layout of unit rows, ``(n, d) -> (n, 2)``, for the segment map."""

    def fit_transform(self, x: F32) -> F32: ...


@runtime_checkable
class NeighbourIndex(Protocol):
    """The ``k`` nearest ``reference`` rows (cosine) of each query row: ``(n_q, k)`` indices and distances."""

    def search(self, reference: F32, queries: F32, k: int) -> tuple[npt.NDArray[np.int64], F32]: ...


# --------------------------------------------------------------------------- clusterers


class SklearnHDBSCAN:
    name = "sklearn"

    def fit(self, x: F32, min_cluster_size: int, min_samples: int) -> ClusterFit:
        from sklearn.cluster import HDBSCAN

        # Euclidean on unit vectors orders pairs exactly as cosine distance does, and allows trees.
        model = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, copy=True)
        labels = model.fit_predict(np.asarray(x, np.float64))
        return ClusterFit(labels.astype(np.int32), model.probabilities_.astype(np.float32))


class CumlHDBSCAN:
    name = "cuml"

    def fit(self, x: F32, min_cluster_size: int, min_samples: int) -> ClusterFit:
        import cupy as cp
        from cuml.cluster import HDBSCAN

        model = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples)
        labels = cp.asnumpy(model.fit_predict(cp.asarray(x)))
        return ClusterFit(labels.astype(np.int32), cp.asnumpy(model.probabilities_).astype(np.float32))


# --------------------------------------------------------------------------- reducers


class PCAReducer:
    name = "pca"

    def fit_transform(self, x: F32) -> F32:
        from handclust.core.segmentation import pca_reduce

        y = pca_reduce(x, 2)
        if y.shape[1] < 2:
            y = np.hstack([y, np.zeros((len(x), 2 - y.shape[1]))])
        return np.asarray(y, np.float32)


@dataclass
class UmapReducer:
    seed: int = 0
    n_neighbors: int = 15
    name: str = "umap-learn"

    def fit_transform(self, x: F32) -> F32:
        import warnings

        import umap

        n = len(x)
        with warnings.catch_warnings():  # "n_jobs overridden by random_state": we want reproducible maps
            warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
            y = umap.UMAP(n_neighbors=min(self.n_neighbors, n - 1), n_components=2, metric="euclidean", random_state=self.seed,
                          init="spectral" if n > 20 else "random").fit_transform(x)
        return np.asarray(y, np.float32)


@dataclass
class CumlUMAP:
    seed: int = 0
    n_neighbors: int = 15
    name: str = "cuml-umap"

    def fit_transform(self, x: F32) -> F32:
        import cupy as cp
        from cuml.manifold import UMAP

        y = UMAP(n_neighbors=min(self.n_neighbors, len(x) - 1), n_components=2, random_state=self.seed).fit_transform(cp.asarray(x))
        return np.asarray(cp.asnumpy(y), np.float32)


# --------------------------------------------------------------------------- neighbour indexes


@dataclass
class FaissIndex:
    """Exact inner-product search (HNSW on CPU from :data:`HNSW_FROM` reference rows); ``gpu`` puts
    the flat index on GPU 0. ``name`` says which index the last search used."""

    gpu: bool = False
    name: str = field(default="")

    def __post_init__(self) -> None:
        self.name = self.name or ("faiss-gpu-flat" if self.gpu else "faiss-cpu-flat")

    def search(self, reference: F32, queries: F32, k: int) -> tuple[npt.NDArray[np.int64], F32]:
        import faiss

        d = reference.shape[1]
        index: Any = faiss.IndexFlatIP(d)
        if self.gpu:
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
            self.name = "faiss-gpu-flat"
        elif len(reference) > HNSW_FROM:
            index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = 64
            self.name = "faiss-cpu-hnsw"
        else:
            self.name = "faiss-cpu-flat"
        index.add(np.ascontiguousarray(reference, np.float32))
        sim, idx = index.search(np.ascontiguousarray(queries, np.float32), k)
        return idx.astype(np.int64), (1.0 - sim).astype(np.float32)


class SklearnNeighbours:
    """Exact search with scikit-learn (trees on unit rows: Euclidean distance orders as cosine)."""

    name = "sklearn-knn"

    def search(self, reference: F32, queries: F32, k: int) -> tuple[npt.NDArray[np.int64], F32]:
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k).fit(np.asarray(reference, np.float64))
        dist, idx = nn.kneighbors(np.asarray(queries, np.float64))
        return idx.astype(np.int64), (dist**2 / 2.0).astype(np.float32)  # |a - b|^2 / 2 = 1 - cos on unit rows


# --------------------------------------------------------------------------- resolver


@dataclass(frozen=True)
class SubModels:
    """Sub-models a caller passes in (``discover(..., models=SubModels(clusterer=...))``); ``None``
    leaves that choice to ``cluster.backend`` / ``cluster.map_method``."""

    clusterer: Clusterer | None = None
    reducer: Reducer | None = None
    neighbours: NeighbourIndex | None = None


@dataclass
class Models:
    """The sub-models a run uses, and in words why each (keys ``hdbscan``, ``knn``, ``map_2d``)."""

    clusterer: Clusterer
    reducer: Reducer
    neighbours: NeighbourIndex
    reasons: dict[str, str] = field(default_factory=dict)


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """A fallback is said once per process (an evaluation resolves the models for every ablation), and
    recorded in every run.json that used it."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


def model_name(model: object) -> str:
    """What run.json calls a sub-model: its ``name`` attribute, else its class name."""
    return str(getattr(model, "name", None) or type(model).__name__)


def _missing(module: str) -> str | None:
    """Why ``module`` cannot be imported, or None when it can."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        return str(exc)
    return None


def pick_clusterer(where: str, why: str) -> tuple[Clusterer, str]:
    if where == "gpu":
        return CumlHDBSCAN(), f"cuML HDBSCAN: {why}"
    return SklearnHDBSCAN(), f"scikit-learn HDBSCAN: {why}"


def pick_reducer(map_method: str, where: str, why: str, seed: int = 0) -> tuple[Reducer, str, bool]:
    """The 2-D map's reducer, why, and whether that is a fallback from what was asked for."""
    if map_method == "pca":
        return PCAReducer(), "PCA: cluster.map_method=pca", False
    if where == "gpu":
        return CumlUMAP(seed), f"cuML UMAP: {why}", False
    err = _missing("umap")
    if err is None:
        return UmapReducer(seed), f"umap-learn: {why}", False
    return PCAReducer(), f"umap-learn not installed ({err}): PCA; pip install umap-learn for UMAP", True


def pick_neighbours(where: str, why: str) -> tuple[NeighbourIndex, str, bool]:
    """The kNN index, why, and whether that is a fallback from what was asked for."""
    err = _missing("faiss")
    if err is not None:
        return SklearnNeighbours(), (f"faiss not installed ({err}): scikit-learn NearestNeighbors; "
                                     "install handclust[cpu] (or [gpu]) for FAISS"), True
    if where != "gpu":
        return FaissIndex(), f"FAISS on CPU: {why}", False
    import faiss

    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        return FaissIndex(gpu=True), f"FAISS on GPU: {why}", False
    return FaissIndex(), (f"FAISS on CPU: this faiss build sees no GPU ({why}); "
                          "install faiss-gpu-cu12 (the [gpu] extra) instead of faiss-cpu"), True


def resolve_models(backend: str = "auto", map_method: str = "umap", seed: int = 0, given: SubModels | None = None) -> Models:
    """Objects for ``cluster.backend`` (auto | cpu | gpu) and ``cluster.map_method``; a sub-model in
    ``given`` is used as passed. ``gpu`` without cuML/CuPy or a device raises :class:`BackendError`;
    a fallback (no umap-learn, no faiss, a faiss without GPU support) is logged as a warning."""
    given = given or SubModels()
    where, why = resolve(backend)
    reasons: dict[str, str] = {}
    clusterer: Clusterer
    reducer: Reducer
    neighbours: NeighbourIndex
    if given.clusterer is not None:
        clusterer, reasons["hdbscan"] = given.clusterer, f"{model_name(given.clusterer)}: passed in by the caller"
    else:
        clusterer, reasons["hdbscan"] = pick_clusterer(where, why)
    if given.neighbours is not None:
        neighbours, reasons["knn"] = given.neighbours, f"{model_name(given.neighbours)}: passed in by the caller"
    else:
        neighbours, reasons["knn"], fallback = pick_neighbours(where, why)
        if fallback:
            _warn_once(f"kNN graph: {reasons['knn']}")
    if given.reducer is not None:
        reducer, reasons["map_2d"] = given.reducer, f"{model_name(given.reducer)}: passed in by the caller"
    else:
        reducer, reasons["map_2d"], fallback = pick_reducer(map_method, where, why, seed)
        if fallback:
            _warn_once(f"2-D map: {reasons['map_2d']}")
    return Models(clusterer, reducer, neighbours, reasons)
