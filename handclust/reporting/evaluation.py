"""Evaluation of a run from its stored outputs: phase scores, ablations, cross-clip consistency,
per-clip statistics and, where frame-level ground truth exists, temporal action segmentation scores.

Everything here reads the tables a run wrote (segments with their per-modality descriptors,
clusters, clips) and never touches video, so ``handclust evaluate OUT`` can be rerun after the
fact, e.g. with another phase pattern. Results go to ``eval.json`` and ``ablations.parquet``
(one row per segment and variant: the cluster each ablation gave it), which the report draws.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from handclust import schema
from handclust.config import RunConfig
from handclust.core.clustering import group_segments
from handclust.core.metrics import agreement, clip_mixing, segmentation_scores
from handclust.io import layout
from handclust.io.footage import clip_folders as folders_of
from handclust.io.run_tables import by_clip
from handclust.modalities import registry as modalities

log = logging.getLogger(__name__)

ABLATIONS = schema.ABLATIONS  # every table schema lives in handclust.schema

# The headline comparisons first (motion, scene and video alone, then motion + scene), then every
# other registered modality on its own (under its ablation name).
_CORE_VARIANTS: list[tuple[str, ...]] = [("motion",), ("scene",), ("video",), ("motion", "scene")]


def _variant_name(mods: tuple[str, ...]) -> str:
    return modalities.get(mods[0]).ablation_name if len(mods) == 1 else " + ".join(mods)


def ablation_variants(present: list[str], fused: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(name, modalities) for every subset worth a row, in a stable order, without duplicates."""
    rows: list[tuple[str, tuple[str, ...]]] = [("fusion (this run)", tuple(fused))]
    if sorted(present) != sorted(fused):
        rows.append(("all", tuple(present)))
    for mods in _CORE_VARIANTS:
        if all(m in present for m in mods):
            rows.append((_variant_name(mods), mods))
    named = {m for _, mods in rows for m in mods if len(mods) == 1}
    rows += [(_variant_name((m,)), (m,)) for m in present if m not in named]
    seen: set[tuple[str, ...]] = set()
    unique = []
    for name, mods in rows:
        key = tuple(sorted(mods))
        if key not in seen:
            seen.add(key)
            unique.append((name, mods))
    return unique


def phase_scores(seg_phase: npt.NDArray[np.object_], labels: npt.NDArray[np.int32], frames: npt.NDArray[np.int64]) -> dict[str, Any]:
    """Agreement of clusters with the filename phase, per segment and weighted by duration."""
    known = seg_phase != ""
    if known.sum() < 2 or len(np.unique(seg_phase[known])) < 2:
        return {"note": "fewer than two phases found in filenames"}
    return {"per_segment": agreement(seg_phase[known], labels[known]),
            "duration_weighted": agreement(seg_phase[known], labels[known], weights=frames[known])}


def per_clip_stats(variant: str, labels: npt.NDArray[np.int32], clip_ids: npt.NDArray[np.object_],
                   paths: dict[str, str]) -> list[dict[str, Any]]:
    """Per clip (order of first appearance): clusters, noise rate and segments of one variant.
    Grouped by one sort on (clip, label), not one pass over all rows per clip."""
    labels = np.asarray(labels)
    if not len(labels):
        return []
    ids, first, inv = np.unique(np.asarray(clip_ids, dtype=object), return_index=True, return_inverse=True)
    inv = np.ravel(inv)
    n_rows = np.bincount(inv, minlength=len(ids))
    noise = np.bincount(inv, weights=(labels < 0).astype(np.float64), minlength=len(ids))
    # Distinct non-noise labels per clip: unique (clip, label) pairs, counted per clip.
    pairs = np.unique(np.stack([inv[labels >= 0], labels[labels >= 0].astype(np.int64)], axis=1), axis=0)
    k = np.bincount(pairs[:, 0], minlength=len(ids)) if len(pairs) else np.zeros(len(ids), np.int64)
    return [{"clip_id": ids[g], "path": paths.get(ids[g], ""), "variant": variant, "k": int(k[g]),
             "noise_rate": float(noise[g] / n_rows[g]), "segments": int(n_rows[g])} for g in np.argsort(first).tolist()]


def frame_sequences(segments: pa.Table, clips_tbl: pa.Table, truth_tbl: pa.Table | None, sample_fps: float,
                    ) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.int64], npt.NDArray[np.object_]] | None:
    """Per sampled frame, in time order within each clip: true activity, index of its segment, clip id.

    ``truth_tbl`` has columns ``file`` (clip file name), ``t`` (s) and ``activity``; each sampled
    frame takes the activity in force at its time. Clips without truth are left out.
    """
    if truth_tbl is None or truth_tbl.num_rows == 0:
        return None
    gt = truth_tbl.to_pandas()
    by_file = {f: (g["t"].to_numpy(), g["activity"].to_numpy()) for f, g in gt.sort_values("t").groupby("file")}
    paths = by_clip(clips_tbl, "path")
    truth, seg_index, clip = [], [], []
    seg = segments.select(["clip_id", "frame_start", "frame_end"]).to_pylist()
    for i, r in enumerate(seg):
        g = by_file.get(Path(paths.get(r["clip_id"], "")).name)
        if g is None:
            continue
        t = np.arange(r["frame_start"], r["frame_end"]) / sample_fps
        k = np.clip(np.searchsorted(g[0], t, side="right") - 1, 0, len(g[0]) - 1)
        truth.append(g[1][k])
        seg_index.append(np.full(len(t), i, np.int64))
        clip.append(np.full(len(t), r["clip_id"], dtype=object))
    if not truth:
        return None
    return np.concatenate(truth).astype(object), np.concatenate(seg_index), np.concatenate(clip)


def load_truth(footage: Any) -> pa.Table | None:
    """Frame-level ground truth next to the footage (``ground_truth.parquet``), if there is one."""
    from handclust.io.footage import load_ground_truth

    if footage is None or isinstance(footage, list | tuple) or not Path(str(footage)).is_dir():
        return None
    return load_ground_truth(footage)


def ablation_sample(clip_ids: npt.NDArray[np.object_], max_segments: int, seed: int = 0) -> tuple[npt.NDArray[np.int64], dict[str, Any]]:
    """Rows ``(m,)`` (ascending) of whole clips drawn at random until about ``max_segments`` segments,
    every row when there are no more than that; and what was drawn, for eval.json. Whole clips, so
    per-clip normalisation and the timeline model see what they see in the run."""
    n = len(clip_ids)
    ids, first, inv = np.unique(np.asarray(clip_ids, dtype=object), return_index=True, return_inverse=True)
    if n <= max_segments:
        return np.arange(n), {"segments": n, "clips": len(ids), "of_segments": n, "of_clips": len(ids), "sampled": False}
    inv = np.ravel(inv)
    counts = np.bincount(inv, minlength=len(ids))
    # Clips in file order (first appearance), then a seeded shuffle: the draw does not depend on how ids hash.
    order = np.argsort(first)[np.random.default_rng(seed).permutation(len(ids))]
    take = order[: int(np.searchsorted(np.cumsum(counts[order]), max_segments)) + 1]
    rows = np.flatnonzero(np.isin(inv, take))
    return rows, {"segments": int(len(rows)), "clips": int(len(take)), "of_segments": n, "of_clips": len(ids), "sampled": True,
                  "why": f"evaluation.ablation_max_segments={max_segments}: ablations re-cluster whole clips drawn at random"}


def ablation_clusterings(segments: pa.Table, cfg: RunConfig, models: Any = None,
                         sample_rows: Callable[[npt.NDArray[np.int64]], pa.Table] | None = None,
                         clip_folders: Mapping[str, str] | None = None,
                         ) -> tuple[pa.Table, list[dict[str, Any]], dict[str, Any]]:
    """Re-cluster the ablation variants (:func:`ablation_variants`) on :func:`ablation_sample` of
    ``segments``, with ``models`` (the run's own sub-models: the clustering task passes them, so a
    GPU backend runs where the GPU is). Returns ``ablations.parquet`` rows of the variants other
    than the run's own (:data:`ABLATIONS`, sampled rows in row order), per variant its name,
    modalities and weights (or ``not_computed``), and the sample description. ``sample_rows``:
    the sampled rows' table, every column (the clustering step read ``segments`` without the
    fused descriptors, and reads them for the sample's clips only); default ``segments``' rows.
    ``clip_folders``: clip id -> its folder, tried first when the clips are parted, as in the run."""
    clip_ids = np.asarray(segments.column("clip_id").to_pylist(), dtype=object)
    rows, sample = ablation_sample(clip_ids, cfg.evaluation.ablation_max_segments, cfg.cluster.seed)
    if sample_rows is not None:
        sub = sample_rows(rows)
    else:
        sub = segments.take(pa.array(rows, pa.int64())) if sample["sampled"] else segments
    sub_ids = clip_ids[rows]
    present = modalities.present(sub)
    fused_mods = [m for m in modalities.fusion_modalities(cfg) if m in present]
    tables, info = [], []
    for name, mods in ablation_variants(present, fused_mods):
        if name == "fusion (this run)":
            continue
        vectors, measured = modalities.fusion_inputs(sub, mods)
        grouping = group_segments(vectors, sub_ids, schema.durations(sub), cfg.cluster, measured, models=models,
                                  clip_folders=clip_folders)
        fusion, c = grouping.fusion, grouping.clustering
        if all(s.weight == 0 for s in fusion.scores.values()):
            # e.g. pose on footage where MediaPipe never found a hand or a body
            info.append({"name": name, "modalities": list(mods), "coverage": 0.0, "not_computed": f"no segment observed {' + '.join(mods)}"})
            continue
        info.append({"name": name, "modalities": list(mods), "weights": {m: s.weight for m, s in fusion.scores.items()}})
        tables.append(pa.table({"segment_id": sub.column("segment_id"), "clip_id": pa.array(sub_ids.tolist(), pa.string()),
                                "variant": pa.array([name] * sub.num_rows, pa.string()),
                                "cluster": pa.array(np.asarray(c.labels, np.int32))}, schema=ABLATIONS)
                      .append_column("activity", pa.array(np.asarray(c.activity, np.int32))))
    table = pa.concat_tables(tables) if tables else ABLATIONS.empty_table().append_column("activity", pa.array([], pa.int32()))
    return table, info, {**sample, "present": present}


def evaluate_tables(segments: pa.Table, clips_tbl: pa.Table, clusters: pa.Table, cfg: RunConfig,
                    truth: pa.Table | None = None, ablations: bool = True,
                    computed: tuple[pa.Table, list[dict[str, Any]], dict[str, Any]] | None = None,
                    ) -> tuple[dict[str, Any], pa.Table]:
    """All evaluation numbers of one run, and the per-segment cluster of every ablation variant.

    ``segments`` and ``clusters`` must be in the same row order (one row per segment). ``computed``:
    the ablation clusterings made already (:func:`ablation_clusterings`, e.g. in the clustering task
    with the run's own models); otherwise, with ``ablations``, they are made here with ``cfg``'s
    backend. Ablations score a sample of whole clips above ``evaluation.ablation_max_segments``
    segments, the run's own row on the same sample (``ablation_sample`` in eval.json).
    """
    clip_ids = np.asarray(segments.column("clip_id").to_pylist(), dtype=object)
    paths = by_clip(clips_tbl, "path")
    phases = by_clip(clips_tbl, "phase")
    seg_phase = np.asarray([phases.get(c) or "" for c in clip_ids], dtype=object)
    frames = np.asarray(segments.column("frame_end")) - np.asarray(segments.column("frame_start"))
    labels = np.asarray(clusters.column("cluster"), np.int32)
    activity = np.asarray(clusters.column("activity"), np.int32)
    seq = frame_sequences(segments, clips_tbl, truth, cfg.decode.sample_fps)

    def scores(lab: npt.NDArray[np.int32], act: npt.NDArray[np.int32], full: bool,
               rows: npt.NDArray[np.int64] | None = None) -> dict[str, Any]:
        """Scores of labels ``lab`` / ``act`` of the segments ``rows`` (default all)."""
        ph, fr, cid = (seg_phase, frames, clip_ids) if rows is None else (seg_phase[rows], frames[rows], clip_ids[rows])
        row: dict[str, Any] = {
            "k": int(len(np.unique(lab[lab >= 0]))), "noise_rate": float((lab < 0).mean()) if len(lab) else 0.0,
            "phase": phase_scores(ph, act, fr),
            "cross_clip": clip_mixing(lab, cid),
        }
        sq = seq if rows is None else (frame_sequences(segments.take(pa.array(rows, pa.int64())), clips_tbl, truth,
                                                       cfg.decode.sample_fps) if seq is not None else None)
        if sq is not None:
            gt, seg_index, clip = sq
            s = segmentation_scores(gt, act[seg_index], clip)
            # Footage runs mean a cluster to be one activity in every clip: their headline MoF/F1/Edit
            # (report tables, run.json summary) are the whole-set ones; both blocks stay beside them.
            s = {**{k: v for k, v in s["whole_set"].items() if k not in ("matching", "match")}, **s}
            if not full:
                s = {k: v for k, v in s.items() if k != "videos"}
                s["whole_set"] = {k: v for k, v in s["whole_set"].items() if k != "match"}
            row["ground_truth"] = s
        return row

    ev: dict[str, Any] = {"segments": int(segments.num_rows), "clips": int(len(np.unique(clip_ids))),
                          "phase_pattern": cfg.phase.pattern, **scores(labels, activity, full=True),
                          **activity_profiles(segments, labels, cfg)}
    ev["per_clip"] = per_clip_stats("fusion (this run)", labels, clip_ids, paths)
    tables = [pa.table({"segment_id": segments.column("segment_id"), "clip_id": pa.array(clip_ids.tolist(), pa.string()),
                        "variant": pa.array(["fusion (this run)"] * len(clip_ids), pa.string()),
                        "cluster": pa.array(labels)}, schema=ABLATIONS)]
    ev["ablations"] = []
    if computed is None and ablations and segments.num_rows >= 3:
        computed = ablation_clusterings(segments, cfg, clip_folders=folders_of(paths))
    if computed is not None and segments.num_rows >= 3:
        table, info, sample = computed
        ev["modalities_present"] = sample.get("present", [])
        ev["ablation_sample"] = {k: v for k, v in sample.items() if k != "present"}
        pos = {s: i for i, s in enumerate(segments.column("segment_id").to_pylist())}
        by_variant = {}
        if table.num_rows:
            v_col = np.asarray(table.column("variant").to_pylist(), dtype=object)
            for name in dict.fromkeys(v_col.tolist()):
                by_variant[name] = table.filter(pa.array(v_col == name))
        rows0: npt.NDArray[np.int64] | None = None
        if by_variant:
            first = next(iter(by_variant.values()))
            rows0 = np.asarray([pos[s] for s in first.column("segment_id").to_pylist()], np.int64)
        sampled = bool(sample.get("sampled")) and rows0 is not None
        own = (scores(labels[rows0], activity[rows0], False, rows0) if sampled and rows0 is not None
               else scores(labels, activity, False))
        ev["ablations"].append({"name": "fusion (this run)", "modalities": [m for m in modalities.fusion_modalities(cfg)
                                                                           if m in ev["modalities_present"]], **own})
        for a in info:
            if "not_computed" in a:
                ev["ablations"].append(a)
                continue
            t = by_variant[a["name"]]
            rows = np.asarray([pos[s] for s in t.column("segment_id").to_pylist()], np.int64)
            lab, act = np.asarray(t.column("cluster"), np.int32), np.asarray(t.column("activity"), np.int32)
            ev["ablations"].append({"name": a["name"], "modalities": a["modalities"],
                                    **scores(lab, act, False, rows if sampled else None), "weights": a["weights"]})
            ev["per_clip"] += per_clip_stats(a["name"], lab, clip_ids[rows], paths)
            tables.append(t.select(ABLATIONS.names))
    return ev, pa.concat_tables(tables)


def activity_profiles(segments: pa.Table, labels: npt.NDArray[np.integer], cfg: RunConfig) -> dict[str, Any]:
    """What each activity shows, from each computed modality's profile (:mod:`handclust.modalities.profiles`):
    ``top_tools`` (OWLv2), ``keypoints`` and ``hands`` (MediaPipe), keyed by cluster id as a string."""
    return modalities.profiles(segments, np.asarray(labels), cfg)


def evaluate(out: str | Path, config: RunConfig | str | Path | None = None, overrides: list[str] | None = None,
             footage: Any = None, ablations: bool = True) -> dict[str, Any]:
    """Recompute ``eval.json`` and ``ablations.parquet`` of a finished run in ``out``.

    The run's own resolved config (``run.json``) is the base; ``config``/``overrides`` change it
    (e.g. ``phase.pattern``). Ground truth is looked for next to the run's footage, or ``footage``.
    """
    from handclust.io import run_lock
    from handclust.io.storage import OutputStore

    store = OutputStore(out, create=False)
    with run_lock.hold(store, "evaluate"):
        return _evaluate(store, out, config, overrides, footage, ablations)


def _evaluate(store: Any, out: str | Path, config: RunConfig | str | Path | None, overrides: list[str] | None,
              footage: Any, ablations: bool) -> dict[str, Any]:
    from handclust.config import ConfigError, RunConfig, load_config, with_overrides
    from handclust.io.run_record import read_run
    from handclust.io.run_tables import check_segments_cover, ok_segments

    if not store.exists(layout.CLUSTERS) or not store.exists(layout.CLIPS):
        raise FileNotFoundError(f"{store.uri}: no finished run here (clusters.parquet / clips.parquet missing); "
                                f"run `handclust run FOOTAGE --out {out}` first")
    run = read_run(store)
    if isinstance(config, RunConfig):
        cfg = config
    elif config is not None:
        cfg = load_config(config, overrides)
        overrides = None
    else:
        try:
            cfg = RunConfig.model_validate(run.get("config") or {})
        except Exception as exc:  # an older or hand-edited run.json
            raise ConfigError(f"{store.uri}/run.json: its config does not validate ({exc}); pass --config") from exc
    if overrides:
        cfg = with_overrides(cfg, overrides)
    clips_tbl = store.read_table(layout.CLIPS)
    segments = ok_segments(store, clips_tbl)
    clusters = store.read_table(layout.CLUSTERS)
    # Checked before anything is written: a run whose segments/ went missing gave an empty eval.json over a good one.
    check_segments_cover(store, clusters.column("segment_id").to_pylist(), segments.column("segment_id").to_pylist(),
                         "eval.json and ablations.parquet")
    order = {s: i for i, s in enumerate(clusters.column("segment_id").to_pylist())}
    idx = [order[s] for s in segments.column("segment_id").to_pylist() if s in order]
    if len(idx) != segments.num_rows:
        raise ValueError(f"{store.uri}: clusters.parquet does not cover every segment; rerun `handclust run` into it")
    clusters = clusters.take(pa.array(idx, pa.int64()))
    truth = load_truth(footage if footage is not None else run.get("footage"))
    ev, table = evaluate_tables(segments, clips_tbl, clusters, cfg, truth, ablations=ablations)
    store.write_json(layout.EVAL, ev)
    store.write_table(layout.ABLATIONS, table)
    return ev
