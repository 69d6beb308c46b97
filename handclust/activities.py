"""From all segments of all clips to activities: fusion, joint clustering, timelines, evaluation.

Reads the per-clip segment tables a runner wrote, and writes ``clusters.parquet``,
``embedding_2d.parquet``, ``neighbours.parquet``, ``timelines/``, ``eval.json`` and the
clustering part of ``run.json``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from handclust import modalities, schema
from handclust.clustering import Clustering, Fusion, Grouping, SubModels, group_segments, resolve_models, umap_fit
from handclust.config import ConfigError, RunConfig
from handclust.evaluation import evaluate_tables, load_truth
from handclust.progress import Progress
from handclust.result import RunResult
from handclust.run_record import update_run
from handclust.run_tables import ok_segments
from handclust.storage import OutputStore
from handclust.timeline import write_timelines

log = logging.getLogger(__name__)


def unmeasured_summary(segments: pa.Table, clips_tbl: pa.Table, sample_fps: float) -> dict[str, Any]:
    """Which modalities some segments could not measure, and why: clips whose source shows fewer
    distinct images per second than are sampled (low-fps or held-frame sources)."""
    counts: dict[str, int] = {}
    if "unmeasured" in segments.column_names:
        for u in segments.column("unmeasured").to_pylist():
            for m in u or ():
                counts[m] = counts.get(m, 0) + 1
    slow = []
    if "effective_fps" in clips_tbl.column_names:
        for r in clips_tbl.select(["path", "effective_fps"]).to_pylist():
            if r["effective_fps"] is not None and r["effective_fps"] < 0.9 * sample_fps:
                slow.append({"path": r["path"], "effective_fps": round(float(r["effective_fps"]), 3)})
    why = ("segments of clips with too few distinct frames to measure motion, or a period between descriptor.min_period_s "
           "and max_period_s (rhythm), count as not observing that modality in the fusion") if counts else "every segment measured every modality"
    return {"segments": counts, "low_rate_clips": slow, "why": why}


MODEL_DIR = "model"


def save_model(store: OutputStore, fusion: Fusion, seg_ids: list[str], clip_ids: npt.NDArray[np.object_],
               clustering: Clustering) -> None:
    """What ``handclust assign`` needs to place new footage without refitting: the fusion
    parameters (per-modality scaling, PCA, weights), the fused reference vectors with their
    clusters, and a FAISS index over them."""
    import io

    import faiss

    buf = io.BytesIO()
    fusion.save(buf)
    store.write_bytes(f"{MODEL_DIR}/fusion.npz", buf.getvalue())
    store.write_table(f"{MODEL_DIR}/reference.parquet", pa.table({
        "segment_id": seg_ids, "clip_id": clip_ids.tolist(),
        "cluster": pa.array(clustering.labels, pa.int32()), "activity": pa.array(clustering.activity, pa.int32()),
        "fused": pa.FixedSizeListArray.from_arrays(pa.array(fusion.fused.ravel(), pa.float32()), fusion.fused.shape[1]),
    }))
    index = faiss.IndexFlatIP(fusion.fused.shape[1])
    index.add(fusion.fused)
    store.write_bytes(f"{MODEL_DIR}/index.faiss", faiss.serialize_index(index).tobytes())


def coarse_groups(fused: npt.NDArray[np.float32], labels: npt.NDArray[np.int32]) -> tuple[pa.Table, dict[str, Any]]:
    """Phase-level groups over activity-level clusters: average-linkage (cosine) on the cluster
    centroids, cut at the widest gap between merge heights, so the number of groups follows the
    data too. Returns ``hierarchy.parquet`` rows (cluster, group) and the merge tree for run.json."""
    from scipy.cluster.hierarchy import fcluster, linkage

    clusters = np.unique(labels[labels >= 0])
    if len(clusters) < 3:
        groups = np.zeros(len(clusters), np.int32)
        tree: list[list[float]] = []
        why = "fewer than 3 activities: one group"
    else:
        from handclust.clustering import l2_normalise

        cent = l2_normalise(np.stack([fused[labels == c].mean(axis=0) for c in clusters]))
        z = linkage(cent, method="average", metric="cosine")
        heights = z[:, 2]
        gaps = np.diff(heights)
        cut = int(np.argmax(gaps))  # merges up to `cut` happen inside groups
        n_groups = len(clusters) - (cut + 1)
        groups = (fcluster(z, t=n_groups, criterion="maxclust") - 1).astype(np.int32)
        tree = z.tolist()
        why = (f"average-linkage of {len(clusters)} activity centroids cut at the widest gap in merge heights "
               f"({heights[cut]:.3f} -> {heights[cut + 1]:.3f}): {len(np.unique(groups))} groups")
    table = schema.table({"cluster": clusters, "group": groups}, schema.HIERARCHY)
    return table, {"groups": int(len(np.unique(groups))) if len(groups) else 0, "reason": why, "linkage": tree,
                   "clusters": clusters.tolist()}


def two_levels(parent: dict[int, int], reason: str) -> tuple[pa.Table, dict[str, Any]]:
    """``hierarchy.parquet`` rows (activity, coarse group) and run.json's record when the fine level
    split the joint clusters (``cluster.fine``): the coarse groups are the joint clusters themselves."""
    acts = sorted(parent)
    groups = [parent[a] for a in acts]
    table = schema.table({"cluster": acts, "group": groups}, schema.HIERARCHY)
    why = reason[reason.find("fine activities"):] if "fine activities" in reason else reason
    return table, {"groups": len(set(groups)), "reason": f"two levels: {len(set(groups))} coarse groups (the joint clusters), "
                   f"{len(acts)} activities inside them; {why}", "linkage": [], "clusters": acts}


def clustering_place(cfg: RunConfig) -> str:
    """``driver`` or ``ray_task``: where the joint clustering runs (``cluster.where``)."""
    if cfg.cluster.where != "auto":
        return cfg.cluster.where
    return "ray_task" if cfg.runner == "ray" and cfg.cluster.backend == "gpu" else "driver"


def _group_and_map(modalities: dict[str, npt.NDArray[np.floating]], clip_ids: npt.NDArray[np.object_],
                   durations: npt.NDArray[np.floating], cfg: RunConfig, measured: dict[str, npt.NDArray[np.bool_]],
                   threads: int | None, given: SubModels | None = None,
                   ) -> tuple[Grouping, npt.NDArray[np.float32], str, dict[str, float], str]:
    """Fuse, cluster, kNN graph, temporal model and 2-D map: the part that wants a GPU. ``given``:
    sub-models the caller passed in; the rest follow ``cluster.backend`` / ``cluster.map_method``."""
    import platform

    import faiss  # noqa: F401  (loaded first, so that its OpenMP pool takes the thread limit)

    from handclust.stages import limit_threads

    limit_threads(threads)
    t0 = time.perf_counter()
    models = resolve_models(cfg.cluster.backend, cfg.cluster.map_method, cfg.cluster.seed, given)
    grouping = group_segments(modalities, clip_ids, durations, cfg.cluster, measured, models=models)
    grouping.clustering.backend_reasons = dict(models.reasons)  # the map's too, where nothing was clustered
    took = {"clustering": time.perf_counter() - t0}
    t0 = time.perf_counter()
    xy, map_backend = umap_fit(grouping.fusion.fused, backend=models.reducer)
    took["map_2d"] = time.perf_counter() - t0
    return grouping, xy, map_backend, took, platform.node()


def run_grouping(where: str, cfg: RunConfig, modalities: dict[str, npt.NDArray[np.floating]], clip_ids: npt.NDArray[np.object_],
                 durations: npt.NDArray[np.floating], measured: dict[str, npt.NDArray[np.bool_]], given: SubModels | None = None,
                 ) -> tuple[Grouping, npt.NDArray[np.float32], str, dict[str, float], str]:
    """:func:`_group_and_map` on the driver, or (``ray_task``) as one Ray task asking for
    ``cluster.num_gpus`` GPUs and ``cluster.num_cpus`` (default 4) CPUs, so that cuML / FAISS-GPU run
    on a GPU worker while the head stays CPU-only. Returns what ran where, in words, last."""
    cc = cfg.cluster
    if where != "ray_task":
        grouping, xy, backend, took, _ = _group_and_map(modalities, clip_ids, durations, cfg, measured, cc.num_cpus, given)
        return grouping, xy, backend, took, "driver"
    import ray

    from handclust.ray_connect import connect

    cpus = cc.num_cpus or 4
    started, cluster = connect(cfg.ray)
    try:
        gpus = float(ray.cluster_resources().get("GPU", 0.0))
        if gpus < cc.num_gpus:
            msg = (f"the clustering task asks for cluster.num_gpus={cc.num_gpus:g} GPU(s) but {cluster} has {gpus:g}; "
                   "set cluster.backend=cpu (or cluster.where=driver) to cluster without one")
            if cfg.ray.address or os.environ.get("RAY_ADDRESS"):
                log.warning("%s; waiting for the autoscaler to add a GPU worker", msg)
            else:
                raise ConfigError(msg)
        task = ray.remote(num_gpus=cc.num_gpus, num_cpus=cpus, max_retries=cfg.ray.max_task_retries)(_group_and_map)
        grouping, xy, backend, took, node = ray.get(task.remote(modalities, clip_ids, durations, cfg, measured, cpus, given))
    finally:
        if started:
            ray.shutdown()
    return grouping, xy, backend, took, f"ray task ({cc.num_gpus:g} GPU, {cpus} CPU) on node {node} of {cluster}"


def build_activities(store: OutputStore, cfg: RunConfig, clips_tbl: pa.Table, footage: Any, prog: Progress,
                     timings: dict[str, float], models: SubModels | None = None) -> RunResult:
    """Cluster the segments of every finished clip jointly, then label, evaluate and draw timelines;
    writes the run-level tables and the clustering part of ``run.json``. ``models``: sub-models passed
    in by the caller (:func:`handclust.discover`)."""

    segments = ok_segments(store, clips_tbl)
    n_ok = int(pc.sum(pc.is_in(clips_tbl.column("status"), value_set=pa.array(["ok", "partial"]))).as_py() or 0)
    failed = clips_tbl.filter(pc.equal(clips_tbl.column("status"), "error"))
    hours = float(np.nansum(np.asarray(clips_tbl.column("duration_s").to_numpy(zero_copy_only=False), dtype=float)[
        np.isin(np.asarray(clips_tbl.column("status").to_pylist(), dtype=object), ["ok", "partial"])])) / 3600
    summary: dict[str, Any] = {
        "clips_total": clips_tbl.num_rows, "clips_ok": n_ok, "clips_failed": failed.num_rows,
        "failed": [{"path": p, "error": e} for p, e in zip(failed.column("path").to_pylist(), failed.column("error").to_pylist(), strict=True)],
        "hours_processed": hours, "segments": segments.num_rows, "out": store.uri,
    }
    run: dict[str, Any] = {}
    if segments.num_rows == 0:
        summary.update(activities=0, noise_rate=None, note="no segments: every clip failed; see clips.parquet")
        empty = schema.empty(schema.CLUSTERS)
        store.write_table("clusters.parquet", empty)
        update_run(store, fresh=True, clustering=None)
        return RunResult(store.uri, clips_tbl, segments, empty, summary)

    t0 = time.perf_counter()
    prog.say(f"clustering {segments.num_rows} segments from {n_ok} clips jointly")
    clip_ids = np.asarray(segments.column("clip_id").to_pylist(), dtype=object)
    vectors, measured = modalities.fusion_inputs(segments, modalities.fusion_modalities(cfg))
    where = clustering_place(cfg)
    if where == "ray_task":
        prog.say(f"clustering in a Ray task with {cfg.cluster.num_gpus:g} GPU(s)")
    grouping, xy, map_backend, took, ran_on = run_grouping(
        where, cfg, vectors, clip_ids, schema.durations(segments), measured, models)
    fusion, clustering = grouping.fusion, grouping.clustering
    timings.update(took)

    seg_ids = segments.column("segment_id").to_pylist()
    clusters = schema.table({
        "segment_id": seg_ids, "clip_id": clip_ids.tolist(), "cluster": clustering.labels,
        "probability": clustering.probabilities, "activity": clustering.activity, "reassigned": clustering.reassigned,
    }, schema.CLUSTERS)
    store.write_table("clusters.parquet", clusters)
    save_model(store, fusion, seg_ids, clip_ids, clustering)
    if grouping.parent is not None:
        hierarchy, run["hierarchy"] = two_levels(grouping.parent, clustering.reason)
    else:
        hierarchy, run["hierarchy"] = coarse_groups(fusion.fused, clustering.labels)
    store.write_table("hierarchy.parquet", hierarchy)
    store.write_table("embedding_2d.parquet", schema.table({
        "segment_id": seg_ids, "clip_id": clip_ids.tolist(), "x": xy[:, 0], "y": xy[:, 1], "cluster": clustering.labels,
    }, schema.EMBEDDING_2D))
    ids = np.asarray(seg_ids, dtype=object)
    store.write_table("neighbours.parquet", pa.table({
        "segment_id": seg_ids,
        "neighbour_ids": [ids[r].tolist() for r in clustering.knn_idx],
        "distances": [r.tolist() for r in clustering.knn_dist],
    }, schema=schema.NEIGHBOURS))

    if cfg.labels.enabled and clustering.k > 0:
        from handclust.labelling import ClusterExamples, api_key, gather_examples, label_clusters, labels_spend, labels_summary

        t0 = time.perf_counter()
        if api_key(cfg.labels):
            prog.say(f"naming {clustering.k} activities with {cfg.labels.model}")
            examples = gather_examples(segments, clips_tbl, clustering.labels, clustering.probabilities, fusion.fused, cfg.labels)
        else:  # say why there are no names, without decoding keyframes nobody will look at
            examples = [ClusterExamples(int(c), [], []) for c in np.unique(clustering.labels[clustering.labels >= 0])]
        labels_tbl = label_clusters(store, examples, cfg.labels, ray_config=cfg.ray if cfg.runner == "ray" else None)
        summary["labels"] = {**labels_summary(labels_tbl), "ran_on": "ray tasks" if cfg.runner == "ray" else "threads",
                             "spend": labels_spend(labels_tbl, cfg.labels)}
        summary["activity_names"] = {int(r["cluster"]): r["label"] for r in labels_tbl.to_pylist() if r["label"]}
        timings["labelling"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    prog.say("evaluating" + (" (with ablations)" if cfg.evaluation.ablations else ""))
    evaluation, ablations = evaluate_tables(segments, clips_tbl, clusters, cfg, load_truth(footage), cfg.evaluation.ablations)
    if "top_tools" in evaluation:
        summary["top_tools"] = evaluation["top_tools"]
    store.write_json("eval.json", evaluation)
    store.write_table("ablations.parquet", ablations)
    timings["evaluation"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_timelines(store, clips_tbl, segments, clustering, prog, names=summary.get("activity_names"))
    timings["timelines"] = time.perf_counter() - t0

    summary.update(activities=clustering.k, noise_rate=clustering.noise_rate, cluster_reason=clustering.reason,
                   backends={**clustering.backends, "map_2d": map_backend})
    if "ground_truth" in evaluation:
        summary["ground_truth_ari"] = evaluation["ground_truth"]["ari"]
        summary["ground_truth_nmi"] = evaluation["ground_truth"]["nmi"]
        summary["ground_truth_mof"] = evaluation["ground_truth"]["mof"]
    run["clustering"] = {
        "fusion_weights": {m: s.weight for m, s in fusion.scores.items()},
        "modality_scores": {m: {"clusteredness": s.clusteredness, "clip_excess": s.clip_excess, "coverage": s.coverage,
                                "clip_normalised": s.clip_normalised, "why": fusion.reasons.get(m, "")}
                            for m, s in fusion.scores.items()},
        "unmeasured": unmeasured_summary(segments, clips_tbl, cfg.decode.sample_fps),
        "temporal": ({"reason": grouping.temporal_reason, "activity_changes_before": grouping.switches[0],
                      "activity_changes_after": grouping.switches[1], "mean_run_s": cfg.cluster.mean_run_s}
                     if grouping.switches else None),
        "min_cluster_size": clustering.min_cluster_size, "min_samples": clustering.min_samples,
        "reason": clustering.reason, "backends": {**clustering.backends, "map_2d": map_backend},
        "backend_reasons": clustering.backend_reasons, "ran_on": ran_on,
        "k": clustering.k, "noise_rate": clustering.noise_rate,
    }
    update_run(store, fresh=True, **run)
    return RunResult(store.uri, clips_tbl, segments, clusters, summary, evaluation)
