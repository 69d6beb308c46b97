"""Clustering sub-models as objects (issue 11, item 5): which backend a run picks and why, a
clusterer / reducer / neighbour index passed in by the user, and the neighbour search itself."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from handclust.config import ClusterConfig, load_config
from handclust.core.clustering import (
    BackendError,
    ClusterFit,
    SubModels,
    assign_noise,
    gpu_status,
    group_segments,
    hdbscan_fit,
    knn_graph,
    l2_normalise,
    resolve_models,
)
from handclust.core.clustering.backends import FaissIndex, PCAReducer, SklearnHDBSCAN, SklearnNeighbours, UmapReducer


@pytest.fixture
def no_cuml(monkeypatch):
    """As on a machine without the [gpu] extra: cuML and CuPy do not import."""
    monkeypatch.setitem(sys.modules, "cuml", None)
    monkeypatch.setitem(sys.modules, "cupy", None)


def blobs(n: int = 120, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n)
    mods = {"scene": (rng.normal(size=(3, 8))[truth] * 3 + rng.normal(size=(n, 8))).astype(np.float32)}
    return mods, np.array([f"c{i // 40}" for i in range(n)], dtype=object), truth


# --------------------------------------------------------------------------- selection


def test_auto_without_cuml_picks_cpu_and_says_why(no_cuml):
    m = resolve_models("auto", "umap")
    assert isinstance(m.clusterer, SklearnHDBSCAN) and isinstance(m.reducer, UmapReducer)
    assert isinstance(m.neighbours, FaissIndex) and not m.neighbours.gpu
    assert m.reasons["hdbscan"].startswith("scikit-learn HDBSCAN") and "cuML/CuPy not importable" in m.reasons["hdbscan"]
    assert m.reasons["knn"].startswith("FAISS on CPU") and m.reasons["map_2d"].startswith("umap-learn")
    # A run records the same: what ran, and why.
    mods, clips, _ = blobs()
    c = group_segments(mods, clips, np.full(len(clips), 5.0), ClusterConfig(backend="auto", temporal=False)).clustering
    assert c.backends == {"hdbscan": "sklearn", "knn": "faiss-cpu-flat"}
    assert "cuML/CuPy not importable" in c.backend_reasons["hdbscan"] and set(c.backend_reasons) == {"hdbscan", "knn", "map_2d"}


def test_gpu_requested_without_a_gpu_is_an_error_naming_the_fix(no_cuml, monkeypatch):
    import handclust.core.clustering.grouping as grouping

    with pytest.raises(BackendError, match=r"cluster\.backend=gpu but cuML/CuPy not importable.*handclust\[gpu\].*cluster\.backend=cpu"):
        resolve_models("gpu")
    mods, clips, _ = blobs()
    monkeypatch.setattr(grouping, "fuse", lambda *a, **k: pytest.fail("fused before the backend was checked"))
    with pytest.raises(BackendError, match=r"handclust\[gpu\]"):
        group_segments(mods, clips, np.full(len(clips), 5.0), ClusterConfig(backend="gpu"))


def test_gpu_check_catches_only_missing_libraries_and_cuda_errors(monkeypatch):
    class CUDARuntimeError(RuntimeError):
        pass

    def fake_cupy(get_count):
        runtime = types.SimpleNamespace(CUDARuntimeError=CUDARuntimeError, getDeviceCount=get_count)
        return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))

    def no_driver():
        raise CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    monkeypatch.setitem(sys.modules, "cuml", types.ModuleType("cuml"))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(no_driver))
    ok, why = gpu_status()
    assert not ok and "CUDA runtime error" in why and "InsufficientDriver" in why
    with pytest.raises(BackendError, match="InsufficientDriver"):
        resolve_models("gpu")
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(lambda: 0))
    assert gpu_status() == (False, "no CUDA device")

    def bug():
        raise ValueError("a bug in the check is not 'no GPU'")

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(bug))
    with pytest.raises(ValueError, match="a bug"):
        gpu_status()
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(lambda: 1))
    monkeypatch.setitem(sys.modules, "cuml", None)  # CuPy without cuML: no GPU clustering
    assert gpu_status()[0] is False and "cuML/CuPy not importable" in gpu_status()[1]


def test_missing_umap_or_faiss_falls_back_and_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)
    monkeypatch.setitem(sys.modules, "faiss", None)
    m = resolve_models("cpu", "umap")
    assert isinstance(m.reducer, PCAReducer) and m.reasons["map_2d"].startswith("umap-learn not installed")
    assert isinstance(m.neighbours, SklearnNeighbours) and "handclust[cpu]" in m.reasons["knn"]
    assert resolve_models("cpu", "pca").reasons["map_2d"] == "PCA: cluster.map_method=pca"


# --------------------------------------------------------------------------- passed in


class SignSplit:
    """Two clusters by the sign of the first coordinate; remembers what it was given."""

    name = "sign-split"

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def fit(self, x, min_cluster_size, min_samples):
        self.seen.append(np.array(x))
        return ClusterFit((x[:, 0] > 0).astype(np.int32), np.ones(len(x), np.float32))


class FirstTwo:
    def fit_transform(self, x):
        return np.asarray(x[:, :2], np.float32)


def test_a_user_clusterer_decides_the_labels():
    mods, clips, _ = blobs()
    user = SignSplit()
    g = group_segments(mods, clips, np.full(len(clips), 5.0), ClusterConfig(temporal=False), models=SubModels(clusterer=user))
    c = g.clustering
    assert user.seen, "the clusterer passed in was never called"
    np.testing.assert_array_equal(c.labels, (user.seen[-1][:, 0] > 0).astype(np.int32))
    np.testing.assert_array_equal(c.labels, (g.fusion.fused[:, 0] > 0).astype(np.int32))  # every fused dim: no PCA cut here
    assert c.backends["hdbscan"] == "sign-split" and c.backend_reasons["hdbscan"] == "sign-split: passed in by the caller"
    assert c.k == 2 and "2 clusters" in c.reason
    labels, _, name = hdbscan_fit(mods["scene"], 5, 3, SignSplit())
    np.testing.assert_array_equal(labels, (l2_normalise(mods["scene"])[:, 0] > 0).astype(np.int32))
    assert name == "sign-split"


def test_sub_models_passed_to_a_run_reach_the_clustering_and_the_map():
    from handclust.activities import run_grouping

    mods, clips, _ = blobs()
    cfg = load_config(None, ["cluster.temporal=false"])
    grouping, xy, map_name, _, ran_on = run_grouping("driver", cfg, mods, clips, np.full(len(clips), 5.0), {},
                                                     SubModels(clusterer=SignSplit(), reducer=FirstTwo()))
    np.testing.assert_array_equal(grouping.clustering.labels, (grouping.fusion.fused[:, 0] > 0).astype(np.int32))
    np.testing.assert_allclose(xy, grouping.fusion.fused[:, :2], atol=1e-6)  # re-normalised rows
    assert map_name == "FirstTwo" and grouping.clustering.backend_reasons["map_2d"] == "FirstTwo: passed in by the caller"
    assert ran_on == "driver"


def test_a_clusterer_returning_the_wrong_shape_is_named():
    class Broken:
        def fit(self, x, min_cluster_size, min_samples):
            return ClusterFit(np.zeros(3, np.int32), np.zeros(3, np.float32))

    with pytest.raises(BackendError, match=r"clusterer Broken returned labels \(3,\).*for 20 rows"):
        hdbscan_fit(np.random.default_rng(0).normal(size=(20, 4)), 5, 3, Broken())


# --------------------------------------------------------------------------- neighbours


@pytest.mark.parametrize("index", [FaissIndex(), SklearnNeighbours()], ids=["faiss-cpu", "sklearn"])
def test_knn_on_duplicate_rows_returns_the_duplicates_never_self(index):
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 6))
    x = np.stack([a, a, a, b, b, c, c, c, c, c, c])  # six copies of c: more than k + 1
    idx, dist, name = knn_graph(x, 2, index)
    assert idx.shape == (11, 2) and name in ("faiss-cpu-flat", "sklearn-knn")
    assert (idx != np.arange(11)[:, None]).all(), "a row is its own neighbour"
    for i in range(3):
        assert set(idx[i]) == {0, 1, 2} - {i}
    assert idx[3, 0] == 4 and idx[4, 0] == 3  # the one other copy of b first
    assert set(idx[5:].ravel()) <= set(range(5, 11))
    np.testing.assert_allclose(dist[[0, 1, 2, 5, 6, 7, 8, 9, 10]], 0.0, atol=1e-5)


def test_sklearn_and_faiss_neighbours_agree():
    x = l2_normalise(np.random.default_rng(1).normal(size=(300, 12)))
    i_f, d_f, _ = knn_graph(x, 5, FaissIndex())
    i_s, d_s, _ = knn_graph(x, 5, SklearnNeighbours())
    np.testing.assert_array_equal(i_f, i_s)
    np.testing.assert_allclose(d_f, d_s, atol=1e-5)


def test_noise_goes_to_the_cluster_its_neighbours_vote_for_else_the_nearest_centroid():
    x = l2_normalise(np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.2, 1.0], [0.95, 0.05]], np.float32))
    labels = np.array([0, 0, 1, 1, -1, -1], np.int32)
    knn_idx = np.array([[1, 5], [0, 5], [3, 4], [2, 4], [3, 2], [4, 4]])  # row 5's neighbours are all noise
    knn_dist = np.full(knn_idx.shape, 0.1, np.float32)
    activity, moved = assign_noise(labels, knn_idx, knn_dist, x)
    np.testing.assert_array_equal(activity, [0, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(moved, [False, False, False, False, True, True])
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, -1, -1])  # the clustering itself keeps its noise
