"""Place new footage into the activities of an earlier run, without refitting.

For footage that keeps arriving: the new clips go through the same per-clip stages (with the
earlier run's feature config, so descriptors are comparable), their segments are fused with the
saved fusion parameters (``model/fusion.npz``) and placed by a distance-weighted vote of their
nearest reference segments in the saved FAISS index (``model/index.faiss``). Cluster ids, and
the names the labeller gave them, are the earlier run's; a segment whose neighbours are mostly
noise stays noise (and is assigned to its nearest activity for the timeline, as in a run).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from handclust import schema
from handclust.activities import driver_columns
from handclust.config import ConfigError, RunConfig, config_to_dict, with_overrides
from handclust.core.clustering import Clustering, Fusion, vote_labels
from handclust.core.clustering.fusion import DescriptorWidthError, PartedFusion
from handclust.errors import ModelError as ModelError  # defined with every error in handclust/errors.py
from handclust.io import layout, run_lock
from handclust.io.footage import find_clips
from handclust.io.run_record import read_run, update_run
from handclust.io.run_tables import SegmentDescriptors, by_clip, ok_segments
from handclust.io.storage import OutputStore
from handclust.modalities import registry as modalities
from handclust.pipeline import process_footage, versions
from handclust.progress import Progress
from handclust.reporting.evaluation import evaluate_tables, load_truth
from handclust.reporting.timeline import write_timelines
from handclust.result import RunResult
from handclust.runtime.plan import FEATURE_SECTIONS, feature_fingerprint


def _first_problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        key = ".".join(str(p) for p in e["loc"])
        return f"unknown key {key!r}" if e["type"] == "extra_forbidden" else f"key {key!r}: {e['msg']}"
    return f"no config ({type(exc).__name__}: {exc})"


def _refuse_out_in_model(model_run: str | Path, out: str | Path) -> None:
    """``out`` must not be the model run or inside it: assigning would overwrite the run it reads."""
    m, o = str(model_run), str(out)
    if "://" in m or "://" in o:
        same = o.rstrip("/") == m.rstrip("/") or o.startswith(m.rstrip("/") + "/")
    else:
        rm, ro = Path(m).resolve(), Path(o).resolve()
        same = ro == rm or rm in ro.parents
    if same:
        raise ConfigError(f"--out {out} is the model run {model_run} or inside it; assigning there would overwrite the run "
                          "it assigns to: choose another --out, e.g. a sibling folder")


def _check_descriptor_dims(fusion: Fusion, cfg: RunConfig, model: OutputStore) -> None:
    """Refuse, before any clip is decoded, a model whose descriptors this version would not reproduce
    (a run made by another handclust version, or a damaged ``model/fusion.npz``)."""
    from handclust.runtime.plan import descriptor_dims

    ours = descriptor_dims(cfg)
    for modality, t in fusion.transforms.items():
        theirs = len(t.mean)
        if modality in ours and ours[modality] != theirs:
            made_by = (read_run(model).get("versions") or {}).get("handclust", "unknown")
            raise ModelError(f"{model.uri_of(layout.FUSION)}: its {modality} descriptors have {theirs} dims, this "
                             f"version of handclust makes {ours[modality]} with that run's config (the run was made by "
                             f"handclust {made_by}): assign with that version, or rerun `handclust run` with this one")


def _load_index(model: OutputStore) -> Any:
    import faiss

    return faiss.deserialize_index(np.frombuffer(model.read_bytes(layout.INDEX), dtype=np.uint8))


def assign(model_run: str | Path, footage: str | Path | list[str | Path], out: str | Path,
           overrides: list[str] | None = None, progress: bool | None = None) -> RunResult:
    """Process ``footage`` into ``out`` and give each segment a cluster of ``model_run``.

    ``overrides`` may change how the work runs (``runner``, ``ray.*``, ``labels.*``); feature
    settings always come from the model run, or the descriptors would not be comparable.
    """
    _refuse_out_in_model(model_run, out)
    model = OutputStore(model_run, create=False)
    for rel in (layout.FUSION, layout.REFERENCE, layout.INDEX, layout.RUN):
        if not model.exists(rel):
            raise ModelError(f"{model.uri}/{rel} not found: assign needs a finished run made by this version of "
                             f"handclust (`handclust run FOOTAGE --out {model_run}`)")
    model_run_json = read_run(model)
    try:
        cfg = RunConfig.model_validate(model_run_json["config"])
    except (ValidationError, KeyError, TypeError) as exc:
        raise ModelError(f"{model.uri_of('run.json')}: its config does not fit this version of handclust "
                         f"({_first_problem(exc)}); assign with the handclust version that made it "
                         f"({(model_run_json.get('versions') or {}).get('handclust', 'see versions in run.json')}), "
                         "or rerun `handclust run` with this version") from None
    ran = ((model_run_json.get("encoders") or {}).get("scene") or {}).get("encoder")
    if cfg.scene.encoder == "auto" and ran in ("histogram", "efficientnet", "dinov2"):
        # The scene encoder that made the model, not the one this install would pick: the vectors must match.
        cfg = with_overrides(cfg, {"scene": {"encoder": ran}})
    if overrides:
        changed = with_overrides(cfg, overrides)
        if feature_fingerprint(changed) != feature_fingerprint(cfg):
            old, new = config_to_dict(cfg), config_to_dict(changed)
            keys = [f"{sec}.{k}" for sec in old for k in (old[sec] if isinstance(old[sec], dict) else {})
                    if sec in FEATURE_SECTIONS or sec == "scene" or sec in modalities.switch_sections()
                    if old[sec].get(k) != new[sec].get(k)]
            raise ConfigError(f"--set {' '.join(overrides)} changes how features are computed ({', '.join(keys) or 'feature config'}), "
                              f"so the new segments could not be compared with those of {model.uri}; drop it (assign uses the "
                              "model run's feature config), or make a new model with `handclust run`")
        cfg = changed
    import io

    fusion = Fusion.load(io.BytesIO(model.read_bytes(layout.FUSION)))
    _check_descriptor_dims(fusion, cfg, model)
    # The footage is checked before --out is created: a refused assign leaves no empty folder behind.
    clips = find_clips(footage, cfg.phase.pattern, skip=[str(out)])  # never its own outputs
    store = OutputStore(out)
    with run_lock.hold(store, "assign"):  # one writer per output folder
        prog = Progress(enabled=cfg.progress if progress is None else progress)
        timings: dict[str, float] = {}
        t_run = time.perf_counter()
        clips_tbl, runner = process_footage(clips, cfg, store, prog, timings)
        # Every column but the descriptors; those are read one modality at a time as the fusion
        # transform takes them, as in the clustering step (issue 22: new footage at scale).
        segments = ok_segments(store, clips_tbl, columns=driver_columns(cfg))

        t0 = time.perf_counter()
        reference = model.read_table(layout.REFERENCE)
        ref_cluster = np.asarray(reference.column("cluster"), np.int32)
        ref_activity = np.asarray(reference.column("activity"), np.int32)
        n = segments.num_rows
        clip_ids = np.asarray(segments.column("clip_id").to_pylist(), dtype=object)
        routed: dict[str, int] | None = None
        if n:
            names = list(fusion.transforms)
            vectors = SegmentDescriptors(store, segments, {m: modalities.get(m).column for m in names})
            try:
                fused = fusion.transform(vectors, clip_ids, schema.measured_masks(segments, names))
            except DescriptorWidthError as exc:  # a learned encoder's width, known only once it ran
                raise ModelError(f"{model.uri_of(layout.FUSION)}: {exc}; assign with the handclust version and "
                                 "models that made the run, or rerun `handclust run`") from None
            index = _load_index(model)
            k = min(cfg.cluster.knn_k, index.ntotal)
            # A run that clustered its clips in groups: each new clip's neighbours within the group it was sent to.
            sim, idx = fusion.search(index, fused, k) if isinstance(fusion, PartedFusion) else index.search(fused, k)
            if isinstance(fusion, PartedFusion):  # which group of the model run each new clip was sent to
                group = fusion.block_of(fused)
                paths = by_clip(clips_tbl, "path")
                routed = {str(paths.get(c, c)): int(g) for c, g in zip(clip_ids.tolist(), group.tolist()) if g >= 0}
            dist = (1.0 - sim).astype(np.float32)
            labels, share = vote_labels(ref_cluster, idx, dist)
            activity, _ = vote_labels(ref_activity, idx, dist)
        else:
            labels = activity = np.zeros(0, np.int32)
            share = np.zeros(0, np.float32)
        timings["assign"] = time.perf_counter() - t0
        seg_ids = segments.column("segment_id").to_pylist()
        clusters = schema.table({
            "segment_id": seg_ids, "clip_id": clip_ids.tolist(), "cluster": labels,
            "probability": np.where(labels >= 0, share, 0.0), "activity": activity, "reassigned": labels < 0,
        }, schema.CLUSTERS)
        store.write_table(layout.CLUSTERS, clusters)
        if model.exists(layout.LABELS):
            store.write_table(layout.LABELS, model.read_table(layout.LABELS))
        names = {int(c): str(lab) for c, lab in (model_run_json.get("summary", {}).get("activity_names") or {}).items()}

        summary: dict[str, Any] = {
            "assigned_from": model.uri, "clips_total": clips_tbl.num_rows,
            "clips_ok": int(sum(s in ("ok", "partial") for s in clips_tbl.column("status").to_pylist())),
            "clips_failed": int(sum(s == "error" for s in clips_tbl.column("status").to_pylist())),
            "segments": n, "activities": int(len(np.unique(labels[labels >= 0]))),
            "noise_rate": float((labels < 0).mean()) if n else None, "out": store.uri,
            "activity_names": names,
            # a model run that clustered its clips in groups: the group (run.json clip_groups) of each new clip
            **({"clip_groups": routed} if routed is not None else {}),
        }
        evaluation: dict[str, Any] = {}
        if n:
            evaluation, _ = evaluate_tables(segments, clips_tbl, clusters, cfg, load_truth(footage), ablations=False)
            store.write_json(layout.EVAL, evaluation)
            placed = Clustering(labels, share, activity, labels < 0, np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32),
                                0, 0, {"assign": "faiss vote"}, f"assigned to the clusters of {model.uri}")
            write_timelines(store, clips_tbl, segments, placed, prog, names=names or None)
            if "ground_truth" in evaluation:
                summary["ground_truth_ari"] = evaluation["ground_truth"]["ari"]
                summary["ground_truth_nmi"] = evaluation["ground_truth"]["nmi"]
                summary["ground_truth_mof"] = evaluation["ground_truth"]["mof"]
        timings["total"] = time.perf_counter() - t_run
        summary["wall_time_s"] = timings["total"]
        update_run(store, fresh=True, mode="assign", assigned_from=model.uri, config=config_to_dict(cfg),
                   footage=[str(f) for f in footage] if isinstance(footage, list | tuple) else str(footage),
                   versions=versions(), timings=timings, summary=summary, feature_fingerprint=runner.fingerprint)
        return RunResult(store.uri, clips_tbl, segments, clusters, summary, evaluation)

