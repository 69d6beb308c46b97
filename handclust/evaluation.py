"""Evaluation of a run from its stored outputs: phase scores, ablations, cross-clip consistency,
per-clip statistics and, where frame-level ground truth exists, temporal action segmentation scores.

Everything here reads the tables a run wrote (segments with their per-modality descriptors,
clusters, clips) and never touches video, so ``handclust evaluate OUT`` can be rerun after the
fact, e.g. with another phase pattern. Results go to ``eval.json`` and ``ablations.parquet``
(one row per segment and variant: the cluster each ablation gave it), which the report draws.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from handclust import modalities, schema
from handclust.clustering import group_segments
from handclust.config import RunConfig
from handclust.metrics import agreement, clip_mixing, segmentation_scores

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
    paths = dict(zip(clips_tbl.column("clip_id").to_pylist(), clips_tbl.column("path").to_pylist(), strict=True))
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
    from handclust.synthetic import load_ground_truth

    if footage is None or isinstance(footage, list | tuple) or not Path(str(footage)).is_dir():
        return None
    return load_ground_truth(footage)


def evaluate_tables(segments: pa.Table, clips_tbl: pa.Table, clusters: pa.Table, cfg: RunConfig,
                    truth: pa.Table | None = None, ablations: bool = True,
                    ) -> tuple[dict[str, Any], pa.Table]:
    """All evaluation numbers of one run, and the per-segment cluster of every ablation variant.

    ``segments`` and ``clusters`` must be in the same row order (one row per segment).
    """
    clip_ids = np.asarray(segments.column("clip_id").to_pylist(), dtype=object)
    paths = dict(zip(clips_tbl.column("clip_id").to_pylist(), clips_tbl.column("path").to_pylist(), strict=True))
    phases = dict(zip(clips_tbl.column("clip_id").to_pylist(), clips_tbl.column("phase").to_pylist(), strict=True))
    seg_phase = np.asarray([phases.get(c) or "" for c in clip_ids], dtype=object)
    frames = np.asarray(segments.column("frame_end")) - np.asarray(segments.column("frame_start"))
    labels = np.asarray(clusters.column("cluster"), np.int32)
    activity = np.asarray(clusters.column("activity"), np.int32)
    seq = frame_sequences(segments, clips_tbl, truth, cfg.decode.sample_fps)

    def scores(lab: npt.NDArray[np.int32], act: npt.NDArray[np.int32], full: bool) -> dict[str, Any]:
        row: dict[str, Any] = {
            "k": int(len(np.unique(lab[lab >= 0]))), "noise_rate": float((lab < 0).mean()) if len(lab) else 0.0,
            "phase": phase_scores(seg_phase, act, frames),
            "cross_clip": clip_mixing(lab, clip_ids),
        }
        if seq is not None:
            gt, seg_index, clip = seq
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
    rows = [{"segment_id": segments.column("segment_id").to_pylist(), "clip_id": clip_ids.tolist(),
             "variant": "fusion (this run)", "cluster": labels}]
    ev["ablations"] = []
    if ablations and segments.num_rows >= 3:
        present = modalities.present(segments)
        fused_mods = [m for m in modalities.fusion_modalities(cfg) if m in present]
        ev["modalities_present"] = present
        for name, mods in ablation_variants(present, fused_mods):
            if name == "fusion (this run)":
                row = {"name": name, "modalities": list(mods), **{k: v for k, v in scores(labels, activity, False).items()}}
            else:
                vectors, measured = modalities.fusion_inputs(segments, mods)
                grouping = group_segments(vectors, clip_ids, schema.durations(segments), cfg.cluster, measured)
                fusion, c = grouping.fusion, grouping.clustering
                if all(s.weight == 0 for s in fusion.scores.values()):
                    # e.g. pose on footage where MediaPipe never found a hand or a body
                    ev["ablations"].append({"name": name, "modalities": list(mods), "coverage": 0.0,
                                            "not_computed": f"no segment observed {' + '.join(mods)}"})
                    continue
                row = {"name": name, "modalities": list(mods), **scores(c.labels, c.activity, False),
                       "weights": {m: s.weight for m, s in fusion.scores.items()}}
                ev["per_clip"] += per_clip_stats(name, c.labels, clip_ids, paths)
                rows.append({"segment_id": segments.column("segment_id").to_pylist(), "clip_id": clip_ids.tolist(),
                             "variant": name, "cluster": c.labels})
            ev["ablations"].append(row)
    table = pa.concat_tables([
        pa.table({"segment_id": r["segment_id"], "clip_id": r["clip_id"], "variant": [r["variant"]] * len(r["clip_id"]),
                  "cluster": pa.array(np.asarray(r["cluster"], np.int32))}, schema=ABLATIONS)
        for r in rows])
    return ev, table


def activity_profiles(segments: pa.Table, labels: npt.NDArray[np.integer], cfg: RunConfig) -> dict[str, Any]:
    """What each activity shows, from each computed modality's profile (:mod:`handclust.profiles`):
    ``top_tools`` (OWLv2), ``keypoints`` and ``hands`` (MediaPipe), keyed by cluster id as a string."""
    return modalities.profiles(segments, np.asarray(labels), cfg)


def evaluate(out: str | Path, config: RunConfig | str | Path | None = None, overrides: list[str] | None = None,
             footage: Any = None, ablations: bool = True) -> dict[str, Any]:
    """Recompute ``eval.json`` and ``ablations.parquet`` of a finished run in ``out``.

    The run's own resolved config (``run.json``) is the base; ``config``/``overrides`` change it
    (e.g. ``phase.pattern``). Ground truth is looked for next to the run's footage, or ``footage``.
    """
    from handclust.config import ConfigError, RunConfig, load_config, with_overrides
    from handclust.run_tables import ok_segments
    from handclust.storage import OutputStore

    store = OutputStore(out)
    if not store.exists("clusters.parquet") or not store.exists("clips.parquet"):
        raise FileNotFoundError(f"{store.uri}: no finished run here (clusters.parquet / clips.parquet missing); "
                                f"run `handclust run FOOTAGE --out {out}` first")
    run = store.read_json("run.json") if store.exists("run.json") else {}
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
    clips_tbl = store.read_table("clips.parquet")
    segments = ok_segments(store, clips_tbl)
    clusters = store.read_table("clusters.parquet")
    order = {s: i for i, s in enumerate(clusters.column("segment_id").to_pylist())}
    idx = [order[s] for s in segments.column("segment_id").to_pylist() if s in order]
    if len(idx) != segments.num_rows:
        raise ValueError(f"{store.uri}: clusters.parquet does not cover every segment; rerun `handclust run` into it")
    clusters = clusters.take(pa.array(idx, pa.int64()))
    truth = load_truth(footage if footage is not None else run.get("footage"))
    ev, table = evaluate_tables(segments, clips_tbl, clusters, cfg, truth, ablations=ablations)
    store.write_json("eval.json", ev)
    store.write_table("ablations.parquet", table)
    return ev
