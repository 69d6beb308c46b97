"""From all segments of all clips to activities: fusion, joint clustering, timelines, evaluation.

Reads the per-clip segment tables a runner wrote, and writes ``clusters.parquet``,
``embedding_2d.parquet``, ``neighbours.parquet``, ``timelines/``, ``eval.json`` and the
clustering part of ``run.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from handclust import schema
from handclust.config import ConfigError, RunConfig
from handclust.core.clustering import Clustering, Fusion, Grouping, SubModels, group_segments, resolve_models, umap_fit
from handclust.io import layout
from handclust.io.footage import clip_folders
from handclust.io.run_record import update_run
from handclust.io.run_tables import SegmentDescriptors, by_clip, ok_segments
from handclust.io.storage import OutputStore
from handclust.modalities import registry as modalities
from handclust.progress import Progress
from handclust.reporting.evaluation import evaluate_tables, load_truth
from handclust.reporting.timeline import write_timelines
from handclust.result import RunResult
from handclust.runtime.executor import Executor, executor_for

if TYPE_CHECKING:
    from handclust.reporting.labelling import Labeller

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




def save_model(store: OutputStore, fusion: Fusion, seg_ids: list[str], clip_ids: npt.NDArray[np.object_],
               clustering: Clustering) -> None:
    """What ``handclust assign`` needs to place new footage without refitting: the fusion
    parameters (per-modality scaling, PCA, weights), the fused reference vectors with their
    clusters, and a FAISS index over them."""
    import io

    import faiss

    buf = io.BytesIO()
    fusion.save(buf)
    store.write_bytes(layout.FUSION, buf.getvalue())
    store.write_table(layout.REFERENCE, pa.table({
        "segment_id": seg_ids, "clip_id": clip_ids.tolist(),
        "cluster": pa.array(clustering.labels, pa.int32()), "activity": pa.array(clustering.activity, pa.int32()),
        "fused": pa.FixedSizeListArray.from_arrays(pa.array(fusion.fused.ravel(), pa.float32()), fusion.fused.shape[1]),
    }, schema=schema.reference(fusion.fused.shape[1])))
    index = faiss.IndexFlatIP(fusion.fused.shape[1])
    index.add(fusion.fused)
    store.write_bytes(layout.INDEX, faiss.serialize_index(index).tobytes())


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
        from handclust.core.clustering import l2_normalise

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
    table = schema.table({"cluster": clusters, "group": groups, "clip_group": np.zeros(len(clusters), np.int32)}, schema.HIERARCHY)
    return table, {"groups": int(len(np.unique(groups))) if len(groups) else 0, "reason": why, "linkage": tree,
                   "clusters": clusters.tolist()}


def two_levels(parent: dict[int, int], reason: str) -> tuple[pa.Table, dict[str, Any]]:
    """``hierarchy.parquet`` rows (activity, coarse group) and run.json's record when the fine level
    split the joint clusters (``cluster.fine``): the coarse groups are the joint clusters themselves."""
    acts = sorted(parent)
    groups = [parent[a] for a in acts]
    table = schema.table({"cluster": acts, "group": groups, "clip_group": np.zeros(len(acts), np.int32)}, schema.HIERARCHY)
    why = reason[reason.find("fine activities"):] if "fine activities" in reason else reason
    return table, {"groups": len(set(groups)), "reason": f"two levels: {len(set(groups))} coarse groups (the joint clusters), "
                   f"{len(acts)} activities inside them; {why}", "linkage": [], "clusters": acts}


def clustering_place(cfg: RunConfig) -> str:
    """``driver`` or ``ray_task``: where the joint clustering runs (``cluster.where``)."""
    if cfg.cluster.where != "auto":
        return cfg.cluster.where
    return "ray_task" if cfg.runner == "ray" and cfg.cluster.backend == "gpu" else "driver"


def _group_and_map(modalities: Mapping[str, npt.NDArray[np.floating]], clip_ids: npt.NDArray[np.object_],
                   durations: npt.NDArray[np.floating], cfg: RunConfig, measured: dict[str, npt.NDArray[np.bool_]],
                   threads: int | None, given: SubModels | None = None, clip_folders: Mapping[str, str] | None = None,
                   ) -> tuple[Grouping, npt.NDArray[np.float32], str, dict[str, float], str]:
    """Fuse, cluster, kNN graph, temporal model and 2-D map: the part that wants a GPU. ``given``:
    sub-models the caller passed in; the rest follow ``cluster.backend`` / ``cluster.map_method``.
    ``clip_folders``: clip id -> its folder (:func:`handclust.io.footage.clip_folders`), a layout the
    parting of clips tries first."""
    import platform

    import faiss  # noqa: F401  (loaded first, so that its OpenMP pool takes the thread limit)

    from handclust.stages import limit_threads

    limit_threads(threads)
    t0 = time.perf_counter()
    models = resolve_models(cfg.cluster.backend, cfg.cluster.map_method, cfg.cluster.seed, given)
    grouping = group_segments(modalities, clip_ids, durations, cfg.cluster, measured, models=models, clip_folders=clip_folders)
    grouping.clustering.backend_reasons = dict(models.reasons)  # the map's too, where nothing was clustered
    took = {"clustering": time.perf_counter() - t0}
    t0 = time.perf_counter()
    xy, map_backend = umap_fit(grouping.fusion.fused, backend=models.reducer)
    took["map_2d"] = time.perf_counter() - t0
    return grouping, xy, map_backend, took, platform.node()


def run_grouping(where: str, cfg: RunConfig, modalities: dict[str, npt.NDArray[np.floating]], clip_ids: npt.NDArray[np.object_],
                 durations: npt.NDArray[np.floating], measured: dict[str, npt.NDArray[np.bool_]], given: SubModels | None = None,
                 executor: Executor | None = None, clip_folders: Mapping[str, str] | None = None,
                 ) -> tuple[Grouping, npt.NDArray[np.float32], str, dict[str, float], str]:
    """:func:`_group_and_map` on the driver, or (``ray_task``) as one Ray task asking for
    ``cluster.num_gpus`` GPUs and ``cluster.num_cpus`` (default 4) CPUs, so that cuML / FAISS-GPU run
    on a GPU worker while the head stays CPU-only; the task goes to ``executor`` (the run's; default:
    one built from ``cfg``, closed here). Returns what ran where, in words, last."""
    cc = cfg.cluster
    if where != "ray_task":
        grouping, xy, backend, took, _ = _group_and_map(modalities, clip_ids, durations, cfg, measured, cc.num_cpus, given,
                                                        clip_folders)
        return grouping, xy, backend, took, "driver"
    (grouping, xy, backend, took, node), cluster, cpus = _in_gpu_task(
        cfg, _group_and_map, lambda threads: (modalities, clip_ids, durations, cfg, measured, threads, given, clip_folders),
        executor)
    return grouping, xy, backend, took, f"ray task ({cc.num_gpus:g} GPU, {cpus} CPU) on node {node} of {cluster}"


def _in_gpu_task(cfg: RunConfig, fn: Any, args: Any, executor: Executor | None = None) -> tuple[Any, str, int]:
    """``fn(*args(cpus))`` as one Ray task asking for ``cluster.num_gpus`` GPUs and ``cluster.num_cpus``
    (default 4) CPUs, on ``executor``'s Ray (:meth:`~handclust.runtime.executor.Executor.on_ray`: the
    run's connection, or one opened for this task with a local runner). Without enough GPUs: a
    config error on a local instance, a warning while a named cluster's autoscaler adds one.
    Returns the task's result, the cluster in words and the CPUs asked for."""
    if executor is None:
        with executor_for(cfg) as own:
            return _in_gpu_task(cfg, fn, args, own)
    cc = cfg.cluster
    cpus = cc.num_cpus or 4
    on_ray = executor.on_ray()
    gpus = on_ray.resources().get("GPU", 0.0)
    if gpus < cc.num_gpus:
        msg = (f"the clustering task asks for cluster.num_gpus={cc.num_gpus:g} GPU(s) but {on_ray.cluster} has {gpus:g}; "
               "set cluster.backend=cpu (or cluster.where=driver) to cluster without one")
        if on_ray.remote:
            log.warning("%s; waiting for the autoscaler to add a GPU worker", msg)
        else:
            raise ConfigError(msg)
    result = on_ray.call(fn, *args(cpus), num_cpus=cpus, num_gpus=cc.num_gpus, max_retries=cfg.ray.max_task_retries)
    return result, str(on_ray.cluster), cpus


# Raised when what the checkpoint holds, or how its tables are made, changes with the same config
# (e.g. the hierarchy's two levels): a checkpoint of older code is then clustered again, not reused.
CHECKPOINT_FORMAT = 2


def clustering_key(cfg: RunConfig, clips_tbl: pa.Table) -> str:
    """What the clustering's outputs depend on: the done clips (id, status, segment count), the
    feature fingerprint, the whole cluster config (``cluster.fine``, ``cluster.refine`` ... included)
    and evaluation config, and :data:`CHECKPOINT_FORMAT`. A checkpoint with this key is reused."""
    import hashlib
    import json

    from handclust.config import config_to_dict
    from handclust.runtime.plan import feature_fingerprint

    d = config_to_dict(cfg)
    rows = sorted((r["clip_id"], r["status"], r["n_segments"]) for r in clips_tbl.select(["clip_id", "status", "n_segments"]).to_pylist()
                  if r["status"] in ("ok", "partial"))
    blob = {"format": CHECKPOINT_FORMAT, "clips": rows, "features": feature_fingerprint(cfg), "cluster": d["cluster"],
            "evaluation": d["evaluation"],
            "modalities": list(modalities.fusion_modalities(cfg))}
    return hashlib.sha1(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cluster_and_save(out: str, cfg: RunConfig, clips_tbl: pa.Table, key: str, threads: int | None = None,
                     given: SubModels | None = None) -> dict[str, Any]:
    """The clustering step, where it runs (the driver, or the clustering Ray task on a GPU worker):
    read the done clips' segments itself (nothing large crosses the object store), fuse, cluster,
    map, and the ablations on a sample with the same sub-models; write ``clusters.parquet``,
    ``embedding_2d``, ``neighbours``, ``hierarchy``, ``model/`` and, last, the checkpoint
    ``model/clustering.json``. Returns the checkpoint (JSON-safe: what run.json and the summary need)."""
    import platform

    store = OutputStore(out)
    t0 = time.perf_counter()
    # Every column but the fused descriptors; those are read one modality at a time as fusion takes
    # them (SegmentDescriptors), so the host holds one modality's descriptors, not all of them.
    fused_columns = {m: modalities.get(m).column for m in modalities.fusion_modalities(cfg)}
    segments = ok_segments(store, clips_tbl, columns=[c for c in schema.SEGMENTS.names if c not in set(fused_columns.values())])
    read_s = time.perf_counter() - t0
    clip_ids = np.asarray(segments.column("clip_id").to_pylist(), dtype=object)
    vectors = SegmentDescriptors(store, segments, fused_columns)
    measured = schema.measured_masks(segments, list(fused_columns))
    folders = clip_folders(by_clip(clips_tbl, "path"))
    grouping, xy, map_backend, took, _ = _group_and_map(vectors, clip_ids, schema.durations(segments), cfg, measured, threads, given,
                                                        folders)
    took["read_segments"] = read_s
    fusion, clustering = grouping.fusion, grouping.clustering
    t0 = time.perf_counter()
    seg_ids = segments.column("segment_id").to_pylist()
    store.write_table(layout.CLUSTERS, schema.table({
        "segment_id": seg_ids, "clip_id": clip_ids.tolist(), "cluster": clustering.labels,
        "probability": clustering.probabilities, "activity": clustering.activity, "reassigned": clustering.reassigned,
    }, schema.CLUSTERS))
    save_model(store, fusion, seg_ids, clip_ids, clustering)
    if grouping.parent is not None:  # cluster.fine split the joint clusters: they are the coarse level
        hierarchy, hierarchy_run = two_levels(grouping.parent, clustering.reason)
    else:
        hierarchy, hierarchy_run = coarse_groups(fusion.fused, clustering.labels)
    if grouping.groups:  # each activity's group of clips (ids are numbered apart, so one group each)
        where: dict[int, int] = {}
        for g, rows in enumerate(grouping.groups):
            where.update({int(a): g for a in np.unique(np.concatenate([clustering.labels[rows], clustering.activity[rows]]))})
        hierarchy = hierarchy.set_column(2, "clip_group", pa.array([where.get(int(c), 0) for c in hierarchy.column("cluster").to_pylist()],
                                                                     pa.int32()))
    store.write_table(layout.HIERARCHY, hierarchy)
    store.write_table(layout.EMBEDDING_2D, schema.table({
        "segment_id": seg_ids, "clip_id": clip_ids.tolist(), "x": xy[:, 0], "y": xy[:, 1], "cluster": clustering.labels,
    }, schema.EMBEDDING_2D))
    write_neighbours(store, seg_ids, clustering)
    took["write_tables"] = time.perf_counter() - t0
    ablations = None
    if cfg.evaluation.ablations and segments.num_rows >= 3:
        from handclust.reporting.evaluation import ablation_clusterings

        t0 = time.perf_counter()
        # The run's own sub-models: cluster.backend=gpu runs here, on the GPU, not on a CPU head.
        models = resolve_models(cfg.cluster.backend, cfg.cluster.map_method, cfg.cluster.seed, given)
        table, info, sample = ablation_clusterings(segments, cfg, models, clip_folders=folders,
                                                   sample_rows=lambda rows: with_descriptors(store, clips_tbl, segments, rows,
                                                                                             list(fused_columns.values())))
        store.write_table(layout.MODEL_ABLATIONS, table)
        ablations = {"variants": info, "sample": sample}
        took["ablations"] = time.perf_counter() - t0
    groups = grouping.groups or [np.arange(len(clip_ids))]
    paths = by_clip(clips_tbl, "path")
    clip_groups = {"count": len(groups), "reason": grouping.groups_reason,
                   "clips": [len(set(clip_ids[r].tolist())) for r in groups],
                   # each group's footage (the first 200 paths of each): which clips were clustered together
                   "paths": [sorted({str(paths.get(c, c)) for c in clip_ids[r].tolist()})[:200] for r in groups] if len(groups) > 1 else None}
    ck = {
        "key": key, "node": platform.node(), "took": took, "segments": segments.num_rows, "ablations": ablations,
        "summary": {"activities": clustering.k, "noise_rate": clustering.noise_rate, "cluster_reason": clustering.reason,
                    "clip_groups": len(groups), "backends": {**clustering.backends, "map_2d": map_backend}},
        "clustering": {
            "fusion_weights": {m: sc.weight for m, sc in fusion.scores.items()},
            "modality_scores": {m: {"clusteredness": sc.clusteredness, "clip_excess": sc.clip_excess, "coverage": sc.coverage,
                                    "clip_normalised": sc.clip_normalised, "why": fusion.reasons.get(m, "")}
                                for m, sc in fusion.scores.items()},
            "temporal": ({"reason": grouping.temporal_reason, "activity_changes_before": grouping.switches[0],
                          "activity_changes_after": grouping.switches[1], "mean_run_s": cfg.cluster.mean_run_s,
                          **({"mean_run_s_estimated": tl.run_s, "boundaries": tl.boundaries, "feature_jumps": tl.jumps,
                              "jump_change_floor": tl.jump_floor}
                             if (tl := grouping.timelines) is not None else {})}
                         if grouping.switches else None),
            "min_cluster_size": clustering.min_cluster_size, "min_samples": clustering.min_samples,
            "reason": clustering.reason, "backends": {**clustering.backends, "map_2d": map_backend},
            "backend_reasons": clustering.backend_reasons, "k": clustering.k, "noise_rate": clustering.noise_rate,
        },
        "hierarchy": hierarchy_run,
        "clip_groups": clip_groups,
    }
    store.write_json(layout.CLUSTERING_CHECKPOINT, ck)
    return ck


def with_descriptors(store: OutputStore, clips_tbl: pa.Table, segments: pa.Table, rows: npt.NDArray[np.int64],
                     columns: list[str]) -> pa.Table:
    """``segments``' rows ``rows`` (whole clips, ascending: the ablation sample) with the descriptor
    ``columns`` that the clustering step read without, read for those clips only."""
    sub = segments.take(pa.array(rows, pa.int64()))
    picked = clips_tbl.filter(pc.is_in(clips_tbl.column("clip_id"), value_set=sub.column("clip_id").unique()))
    desc = ok_segments(store, picked, columns=columns)
    if not (desc.column("clip_id").equals(sub.column("clip_id")) and desc.column("seg_idx").equals(sub.column("seg_idx"))):
        raise RuntimeError(f"{store.uri_of('segments')} changed while the clustering step read it; run again")
    for c in columns:
        sub = sub.append_column(c, desc.column(c))
    return sub


def write_neighbours(store: OutputStore, seg_ids: list[str], clustering: Clustering) -> None:
    """``neighbours.parquet``: each segment's kNN ids and distances, built from flat arrays (a Python
    list per row cost minutes at a million segments)."""
    n, k = clustering.knn_idx.shape
    ids = pa.array(seg_ids, pa.string())
    offsets = pa.array(np.arange(0, n * k + 1, max(k, 1), dtype=np.int32) if k else np.zeros(n + 1, np.int32))
    nb = pa.ListArray.from_arrays(offsets, ids.take(pa.array(clustering.knn_idx.ravel(), pa.int64())))
    dist = pa.ListArray.from_arrays(offsets, pa.array(clustering.knn_dist.ravel().astype(np.float32), pa.float32()))
    store.write_table(layout.NEIGHBOURS, pa.Table.from_arrays([ids, nb, dist], schema=schema.NEIGHBOURS))


def run_clustering(where: str, cfg: RunConfig, store: OutputStore, clips_tbl: pa.Table, key: str,
                   given: SubModels | None = None, executor: Executor | None = None) -> tuple[dict[str, Any], str]:
    """:func:`cluster_and_save` on the driver, or (``ray_task``) as one Ray task (on ``executor``'s Ray)
    asking for ``cluster.num_gpus`` GPUs and ``cluster.num_cpus`` (default 4) CPUs; the task reads the
    segments from the output root and writes the tables there. Returns the checkpoint and what ran where."""
    cc = cfg.cluster
    out = store.uri if "://" in store.uri else store.root
    if where != "ray_task":
        return cluster_and_save(out, cfg, clips_tbl, key, cc.num_cpus, given), "driver"
    ck, cluster, cpus = _in_gpu_task(cfg, cluster_and_save, lambda threads: (out, cfg, clips_tbl, key, threads, given), executor)
    return ck, f"ray task ({cc.num_gpus:g} GPU, {cpus} CPU) on node {ck['node']} of {cluster}"


def driver_columns(cfg: RunConfig) -> list[str]:
    """Segment columns the driver reads after clustering (evaluation, labelling, timelines): all but
    the descriptors that only the clustering step reads (no per-activity profile)."""
    heavy = {m.column for m in modalities.registered() if m.profile is None}
    return [c for c in schema.SEGMENTS.names if c not in heavy]


def build_activities(store: OutputStore, cfg: RunConfig, clips_tbl: pa.Table, footage: Any, prog: Progress,
                     timings: dict[str, float], models: SubModels | None = None, *, executor: Executor | None = None,
                     labeller: Labeller | None = None) -> RunResult:
    """Cluster the segments of every finished clip jointly, then label, evaluate and draw timelines;
    writes the run-level tables and the clustering part of ``run.json``. ``models`` and ``labeller``:
    sub-models and a labeller passed in by the caller (:func:`handclust.discover`). ``executor``: the
    run's (:mod:`handclust.runtime.executor`), which runs the clustering task and the naming; default:
    one built from ``cfg`` for this call.

    The clustering step (:func:`cluster_and_save`) reads the descriptors itself, where it runs, and
    leaves a checkpoint: a resubmitted run whose labelling, evaluation or report failed reuses it
    (same clips, features and cluster / evaluation config, and no sub-models passed in)."""
    if executor is None:
        with executor_for(cfg, log_to_driver=prog.enabled) as own:
            return build_activities(store, cfg, clips_tbl, footage, prog, timings, models, executor=own, labeller=labeller)
    t0 = time.perf_counter()
    segments = ok_segments(store, clips_tbl, columns=driver_columns(cfg))
    timings["read_segments"] = time.perf_counter() - t0
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
        store.write_table(layout.CLUSTERS, empty)
        update_run(store, fresh=True, clustering=None)
        return RunResult(store.uri, clips_tbl, segments, empty, summary)

    key = clustering_key(cfg, clips_tbl)
    ck = store.read_json_or(layout.CLUSTERING_CHECKPOINT, None)
    clusters = store.read_table(layout.CLUSTERS) if ck and store.exists(layout.CLUSTERS) else None
    reuse = (models is None and ck is not None and ck.get("key") == key and clusters is not None
             and clusters.column("segment_id").equals(segments.column("segment_id")))
    if reuse:
        prog.say(f"clustering: reusing the checkpoint of {ck['segments']} segments ({layout.CLUSTERING_CHECKPOINT}; delete it to cluster again)")
        ran_on = f"checkpoint ({layout.CLUSTERING_CHECKPOINT}, clustered on {ck.get('node')})"
    else:
        prog.say(f"clustering {segments.num_rows} segments from {n_ok} clips jointly")
        where = clustering_place(cfg)
        if where == "ray_task":
            prog.say(f"clustering in a Ray task with {cfg.cluster.num_gpus:g} GPU(s)")
        ck, ran_on = run_clustering(where, cfg, store, clips_tbl, key, models, executor)
        clusters = store.read_table(layout.CLUSTERS)
        timings.update({k: v for k, v in ck["took"].items()})
    assert clusters is not None
    if not clusters.column("segment_id").equals(segments.column("segment_id")):
        raise RuntimeError(f"{store.uri_of('clusters.parquet')} is not in the order of the segments read back; "
                           f"delete {store.uri_of(layout.CLUSTERING_CHECKPOINT)} and rerun")
    labels = np.asarray(clusters.column("cluster"), np.int32)
    probs = np.asarray(clusters.column("probability"), np.float32)
    clustering = Clustering(labels, probs, np.asarray(clusters.column("activity"), np.int32),
                            np.asarray(clusters.column("reassigned"), bool), np.zeros((len(labels), 0), np.int64),
                            np.zeros((len(labels), 0), np.float32), int(ck["clustering"]["min_cluster_size"]),
                            int(ck["clustering"]["min_samples"]), dict(ck["clustering"]["backends"]), str(ck["clustering"]["reason"]))
    run["hierarchy"] = ck["hierarchy"]
    if ck.get("clip_groups"):
        run["clip_groups"] = ck["clip_groups"]

    k = int(ck["clustering"]["k"])
    if cfg.labels.enabled and k > 0:
        from handclust.reporting.labelling import ClusterExamples, api_key, gather_examples, label_clusters, labels_spend, labels_summary

        t0 = time.perf_counter()
        if labeller is not None or api_key(cfg.labels):
            prog.say(f"naming {k} activities with {getattr(labeller, 'model', None) or cfg.labels.model}")
            ref = store.read_table(layout.REFERENCE, columns=["fused"]).column("fused").combine_chunks()
            fused = ref.flatten().to_numpy().reshape(len(ref), -1).astype(np.float32, copy=False)
            examples = gather_examples(segments, clips_tbl, labels, probs, fused, cfg.labels)
            del fused
        else:  # say why there are no names, without decoding keyframes nobody will look at
            examples = [ClusterExamples(int(c), [], []) for c in np.unique(labels[labels >= 0])]
        labels_tbl = label_clusters(store, examples, cfg.labels, labeller, executor=executor)
        # A labeller passed in is called in this process (it may hold a client, a lock or a count).
        summary["labels"] = {**labels_summary(labels_tbl), "ran_on": "threads" if labeller is not None else executor.tasks,
                             "spend": labels_spend(labels_tbl, cfg.labels)}
        summary["activity_names"] = {int(r["cluster"]): r["label"] for r in labels_tbl.to_pylist() if r["label"]}
        timings["labelling"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    prog.say("evaluating" + (" (with ablations)" if ck.get("ablations") else ""))
    computed = None
    if ck.get("ablations"):
        ab = ck["ablations"]
        computed = (store.read_table(layout.MODEL_ABLATIONS), ab["variants"], ab["sample"])
    evaluation, ablations = evaluate_tables(segments, clips_tbl, clusters, cfg, load_truth(footage), ablations=False, computed=computed)
    if "top_tools" in evaluation:
        summary["top_tools"] = evaluation["top_tools"]
    store.write_json(layout.EVAL, evaluation)
    store.write_table(layout.ABLATIONS, ablations)
    timings["evaluation"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_timelines(store, clips_tbl, segments, clustering, prog, names=summary.get("activity_names"))
    timings["timelines"] = time.perf_counter() - t0

    summary.update(ck["summary"])
    if "ground_truth" in evaluation:
        summary["ground_truth_ari"] = evaluation["ground_truth"]["ari"]
        summary["ground_truth_nmi"] = evaluation["ground_truth"]["nmi"]
        summary["ground_truth_mof"] = evaluation["ground_truth"]["mof"]
    run["clustering"] = {**ck["clustering"], "unmeasured": unmeasured_summary(segments, clips_tbl, cfg.decode.sample_fps),
                         "ran_on": ran_on}
    update_run(store, fresh=True, **run)
    return RunResult(store.uri, clips_tbl, segments, clusters, summary, evaluation)
