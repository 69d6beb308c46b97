"""The clustering step reads its own inputs, runs the ablations on a sample with the run's own
sub-models, and leaves a checkpoint that a resubmitted run reuses instead of clustering again."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq
import pytest

from handclust.activities import build_activities
from handclust.config import load_config
from handclust.core.clustering.backends import ClusterFit, SklearnHDBSCAN, SubModels
from handclust.io.layout import CLUSTERING_CHECKPOINT as CHECKPOINT
from handclust.io.storage import OutputStore
from handclust.pipeline import clips_table
from handclust.progress import Progress
from handclust.reporting.evaluation import ablation_sample
from tests.test_output_ledger import write_run


@dataclass
class CountingHDBSCAN:
    """scikit-learn's HDBSCAN that counts its fits (a sub-model a user passes in)."""

    fits: list[int] = field(default_factory=list)
    name: str = "counting-sklearn"

    def fit(self, x: np.ndarray, min_cluster_size: int, min_samples: int) -> ClusterFit:
        self.fits.append(len(x))
        return SklearnHDBSCAN().fit(x, min_cluster_size, min_samples)


def config(*extra: str):
    return load_config(None, ["runner=local", "labels.enabled=false", "report.enabled=false", "progress=false",
                              "cluster.backend=cpu", "cluster.map_method=pca", "cluster.stability=false", *extra])


@pytest.fixture
def run_dir(tmp_path):
    store = OutputStore(tmp_path)
    clips, _ = write_run(store, n_segments=900, n_clips=30)
    tbl = clips_table(store, clips)
    store.write_table("clips.parquet", tbl)
    return store, tbl


def test_ablations_run_on_a_sample_of_whole_clips_with_the_runs_models(run_dir):
    store, clips_tbl = run_dir
    counting = CountingHDBSCAN()
    cfg = config("evaluation.ablation_max_segments=300")
    res = build_activities(store, cfg, clips_tbl, None, Progress(enabled=False), {}, SubModels(clusterer=counting))
    ev = json.loads(open(store.path("eval.json")).read())
    sample = ev["ablation_sample"]
    assert sample["sampled"] and 300 <= sample["segments"] < 300 + 31 and sample["of_segments"] == 900
    assert sample["segments"] % 30 == 0  # whole clips of 30 segments each
    # The main clustering fit every segment; each ablation variant fit the sample, with the same clusterer.
    main = [f for f in counting.fits if f == 900]  # the run's fit (and its stability report's two)
    computed = [a for a in ev["ablations"][1:] if "not_computed" not in a]
    assert main and counting.fits[len(main):] and set(counting.fits[len(main):]) == {sample["segments"]}
    assert len(counting.fits) - len(main) >= len(computed) >= 4
    names = [a["name"] for a in ev["ablations"]]
    assert names[0] == "fusion (this run)" and "scene only" in names
    abl = pq.read_table(store.path("ablations.parquet")).to_pandas()
    sizes = abl.groupby("variant").size()
    assert sizes["fusion (this run)"] == 900 and (sizes.drop("fusion (this run)") == sample["segments"]).all()
    assert res.summary["activities"] >= 2


@pytest.mark.slow  # the activities step five times over (10 s): a pipeline step, not the inner loop
def test_a_resubmitted_run_reuses_the_clustering_checkpoint(run_dir):
    store, clips_tbl = run_dir
    cfg = config("evaluation.ablations=false")
    first = build_activities(store, cfg, clips_tbl, None, Progress(enabled=False), {})
    assert store.exists(CHECKPOINT)
    before = pq.read_table(store.path("clusters.parquet"))
    # A later step failed (labelling, the report): the resubmitted run clusters nothing again.
    timings: dict[str, float] = {}
    again = build_activities(store, cfg, clips_tbl, None, Progress(enabled=False), timings)
    run = json.loads(open(store.path("run.json")).read())
    assert run["clustering"]["ran_on"].startswith("checkpoint") and "clustering" not in timings
    assert pq.read_table(store.path("clusters.parquet")).equals(before)
    assert again.summary["activities"] == first.summary["activities"]
    # Another cluster config is another clustering.
    other = build_activities(store, config("evaluation.ablations=false", "cluster.knn_k=12"), clips_tbl, None,
                             Progress(enabled=False), timings)
    run = json.loads(open(store.path("run.json")).read())
    assert run["clustering"]["ran_on"] == "driver" and "clustering" in timings and other.summary["segments"] == 900
    # So are the fine level and the refinement (issue 20's knobs): the checkpoint's key holds all of cluster.*.
    for knob in ("cluster.fine=false", "cluster.refine=none"):
        timings.clear()
        build_activities(store, config("evaluation.ablations=false", "cluster.knn_k=12", knob), clips_tbl, None,
                         Progress(enabled=False), timings)
        run = json.loads(open(store.path("run.json")).read())
        assert run["clustering"]["ran_on"] == "driver" and "clustering" in timings, knob
        assert store.read_json(CHECKPOINT)["hierarchy"] == run["hierarchy"]


def test_ablation_sample_takes_every_segment_below_the_cap_and_whole_clips_above():
    ids = np.repeat([f"c{i:02d}" for i in range(20)], 10).astype(object)
    rows, s = ablation_sample(ids, 1000)
    assert len(rows) == 200 and not s["sampled"]
    rows, s = ablation_sample(ids, 45)
    assert s["sampled"] and len(rows) == 50 and len(set(ids[rows])) == 5
    assert np.array_equal(rows, np.sort(rows))


@pytest.mark.ray
def test_the_clustering_task_reads_the_segments_itself_and_writes_the_tables(run_dir):
    """cluster.where=ray_task: the task gets the output root and the clips table, not descriptor arrays."""
    import tempfile

    import ray

    store, clips_tbl = run_dir
    ray.init(num_cpus=2, object_store_memory=300 * 1024 * 1024, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="hcray"))
    try:
        cfg = config("runner=ray", "cluster.where=ray_task", "cluster.num_gpus=0", "cluster.num_cpus=1",
                     "evaluation.ablation_max_segments=300")
        res = build_activities(store, cfg, clips_tbl, None, Progress(enabled=False), {})
    finally:
        ray.shutdown()
    run = json.loads(open(store.path("run.json")).read())
    assert run["clustering"]["ran_on"].startswith("ray task (0 GPU, 1 CPU)")
    assert res.clusters.num_rows == 900 and res.summary["activities"] >= 2
    ev = json.loads(open(store.path("eval.json")).read())
    assert ev["ablation_sample"]["sampled"] and len(ev["ablations"]) > 3
