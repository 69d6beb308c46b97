"""Column names and Arrow types of every table HandClust writes, in one place.

Tables are keyed by ``clip_id`` (stable hash of a clip's path and size) and ``frame_idx`` /
``segment_id``. Vector-valued features are ``list<float32>`` columns, one array per row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

VECTOR = pa.list_(pa.float32())

CLIPS = pa.schema(
    [
        ("clip_id", pa.string()),
        ("path", pa.string()),
        ("size_bytes", pa.int64()),
        ("phase", pa.string()),
        # ok | partial (decoding stopped early or skipped a gap: what was read is kept) | error |
        # quarantined (failed ray.max_attempts times: a rerun skips it until its status file is removed)
        ("status", pa.string()),
        ("error", pa.string()),
        ("attempts", pa.int32()),
        ("duration_s", pa.float64()),
        ("source_fps", pa.float64()),
        # Distinct sampled frames per second (at most decode.sample_fps): below it the source is
        # slower than the sampling or holds frames (features/held.py); null for clips not decoded.
        ("effective_fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("n_frames", pa.int32()),
        ("n_segments", pa.int32()),
        ("backend", pa.string()),
    ]
)

# The frames table's columns written whatever the config: keys, held frames, motion and ego-motion, the scene embedding.
_FRAME_KEYS: list[tuple[str, pa.DataType]] = [
    ("clip_id", pa.string()),
    ("frame_idx", pa.int32()),
    ("t", pa.float64()),
    ("fresh", pa.bool_()),  # shows a new source image: differs from the last distinct sampled frame (features/held.py)
    # Seconds between this frame and the last distinct frame its motion is measured against. NaN on
    # held frames and a clip's first frame, which have no motion measurement: the flow_* and ego_*
    # columns are NaN exactly there. Motion columns are per second over this step.
    ("motion_dt", pa.float32()),
    ("flow_mag_mean", pa.float32()),
    ("flow_mag_p90", pa.float32()),
    ("flow_direction_hist", VECTOR),
    ("flow_grid", VECTOR),
    ("ego_tx", pa.float32()),
    ("ego_ty", pa.float32()),
    ("ego_rotation", pa.float32()),
    ("ego_scale", pa.float32()),
    ("ego_residual", pa.float32()),
    ("ego_ratio", pa.float32()),
    ("ego_inliers", pa.float32()),
    ("scene_embedding", VECTOR),
]
# After them: the stored frame columns each registered modality declares (Modality.frame_columns in
# handclust/modalities/registry.py), in registry order, with their Arrow type. The built-in ones:
#   tool_scores (tools)   OWLv2 max score per prompt; NaN on frames not scored
#   hand_landmarks (pose) MediaPipe, per hand slot [score, 21 x (x, y, z)]; layout in features/keypoints.py
#   body_landmarks (pose) MediaPipe, [found, 33 x (x, y, z, visibility)]
#   hand_source (pose)    anchored hand propagation (features/hands.py): 0 no hand, 1 detected, 2 only propagated hands
#   hand_age (pose)       per hand slot: 0 detected, k = propagated k sampled frames from its anchor, NaN no hand
#   hand_motion (pose)    per hand slot: ego-compensated wrist velocity (vx, vy), frame widths / s; NaN none
# A modality that is off writes its vector columns as empty lists, its scalar ones as OPTIONAL_SCALARS says.
# Written only by handclust.modalities.registry, like MODALITY_COLUMNS below.
MODALITY_FRAME_COLUMNS: dict[str, pa.DataType] = {}


def frames_schema() -> pa.Schema:
    """The frames table's schema: the columns above, then the registered modalities' stored frame columns."""
    return pa.schema([*_FRAME_KEYS, *MODALITY_FRAME_COLUMNS.items()])


def optional_vectors() -> tuple[str, ...]:
    """Vector frame columns of the registered modalities: written as empty lists when their stage is off."""
    return tuple(c for c, t in MODALITY_FRAME_COLUMNS.items() if t == VECTOR)


# The segment descriptor column of each registered modality (desc_<name>), in registry order, and
# for sparse modalities the descriptor element that is 0 when the segment saw nothing of it (no
# hand, no body: fusion weighs such a modality by the share of segments that saw something and
# gives the others no position in it, clustering.fuse). Written only by handclust.modalities.registry (the
# registry, which sits above this module); handclust/__init__ imports it, so both are filled.
MODALITY_COLUMNS: dict[str, str] = {}
OBSERVED_INDEX: dict[str, int] = {}

# Scalar columns of optional stages, and their value when the stage is off: the segments' hand coverage
# here; scalar frame columns of registered modalities (pose's hand_source) are added by the registry.
OPTIONAL_SCALARS: dict[str, Any] = {"hand_looked": np.int32(0), "hand_detected": np.int32(0), "hand_propagated": np.int32(0)}

_SEGMENT_KEYS: list[tuple[str, pa.DataType]] = [
    ("clip_id", pa.string()),
    ("segment_id", pa.string()),
    ("seg_idx", pa.int32()),
    ("frame_start", pa.int32()),
    ("frame_end", pa.int32()),  # exclusive
    ("t_start", pa.float64()),
    ("t_end", pa.float64()),
    ("boundary_detectors", pa.string()),  # detectors that voted for the boundary at t_start
    ("boundary_score", pa.float32()),
    ("rhythm_period_s", pa.float32()),
    ("rhythm_strength", pa.float32()),
    ("ssm_period_s", pa.float32()),
    ("flow_period_s", pa.float32()),
    ("repetition_period_s", pa.float32()),  # null unless both estimates agree
    # Modalities (registered names) this segment's frames could not measure: "motion" and "ego"
    # when no frame has a motion measurement (all held); "rhythm" also when distinct frames are too
    # few or too irregular to resolve periods down to descriptor.min_period_s. Their descriptors are
    # zeros there and the period / strength columns NaN: fusion must treat them as unobserved.
    ("unmeasured", pa.list_(pa.string())),
]
# Between the two: desc_<name> (list<float32>) of every registered modality, in registry order
# (what each holds: the `doc` of its entry in handclust/modalities/registry.py).
_SEGMENT_TAIL: list[tuple[str, pa.DataType]] = [
    # Hand coverage of the segment's looked-at frames (pose.fps): looked at, with a detected hand,
    # with only propagated hands (features/hands.py). 0 when hands are off.
    ("hand_looked", pa.int32()),
    ("hand_detected", pa.int32()),
    ("hand_propagated", pa.int32()),
]


def segments_schema() -> pa.Schema:
    """The segments table's schema: keys, periods, one descriptor column per registered modality, hand coverage."""
    return pa.schema([*_SEGMENT_KEYS, *((c, VECTOR) for c in MODALITY_COLUMNS.values()), *_SEGMENT_TAIL])


def __getattr__(name: str) -> Any:
    # SEGMENTS and FRAMES follow the registry (a modality registered at run time adds its columns), so
    # they are built when read rather than once at import; OPTIONAL_VECTORS likewise.
    if name == "SEGMENTS":
        return segments_schema()
    if name == "FRAMES":
        return frames_schema()
    if name == "OPTIONAL_VECTORS":
        return optional_vectors()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

CLUSTERS = pa.schema(
    [
        ("segment_id", pa.string()),
        ("clip_id", pa.string()),
        ("cluster", pa.int32()),  # -1 = noise
        ("probability", pa.float32()),
        ("activity", pa.int32()),  # cluster, with noise assigned to its nearest cluster
        ("reassigned", pa.bool_()),
    ]
)

EMBEDDING_2D = pa.schema(
    [
        ("segment_id", pa.string()),
        ("clip_id", pa.string()),
        ("x", pa.float32()),
        ("y", pa.float32()),
        ("cluster", pa.int32()),
    ]
)

def reference(dim: int) -> pa.Schema:
    """The run's fused vectors (``dim`` wide) with their clusters, in model/reference.parquet: where
    ``handclust assign`` places new segments."""
    return pa.schema([("segment_id", pa.string()), ("clip_id", pa.string()), ("cluster", pa.int32()), ("activity", pa.int32()),
                      ("fused", pa.list_(pa.float32(), dim))])


# hierarchy.parquet: each activity (fine level) and the coarse group it sits in (site, trade, phase).
HIERARCHY = pa.schema(
    [
        ("cluster", pa.int32()),  # the activity, as in clusters.parquet
        ("group", pa.int32()),  # its coarse group
        ("clip_group", pa.int32()),  # the group of clips it was found in (cluster.split_groups; 0 when the clips did not part)
    ]
)

NEIGHBOURS = pa.schema(
    [
        ("segment_id", pa.string()),
        ("neighbour_ids", pa.list_(pa.string())),
        ("distances", VECTOR),
    ]
)

# ablations.parquet: the cluster of every segment under each ablation variant (handclust.reporting.evaluation).
ABLATIONS = pa.schema([
    ("segment_id", pa.string()),
    ("clip_id", pa.string()),
    ("variant", pa.string()),
    ("cluster", pa.int32()),
])

# labels.parquet: one row per activity (handclust.reporting.labelling).
LABELS = pa.schema([
    ("cluster", pa.int32()),
    ("label", pa.string()),
    ("description", pa.string()),
    ("status", pa.string()),  # ok | cached | error | skipped | budget (not asked: the run's budget was reached)
    ("error", pa.string()),
    ("model", pa.string()),
    ("segment_ids", pa.list_(pa.string())),
    # This run's spend on the cluster (0 for cached): requests made (retries included), tokens as the
    # API's usage metadata counted them (estimated where it gave none), estimated USD.
    ("requests", pa.int32()),
    ("input_tokens", pa.int64()),
    ("output_tokens", pa.int64()),
    ("usd", pa.float64()),
])

GROUND_TRUTH = pa.schema(
    [
        ("file", pa.string()),
        ("frame_idx", pa.int32()),  # source-video frame index
        ("t", pa.float64()),
        ("activity", pa.string()),
        ("trade", pa.string()),  # the kind of work (masonry, framing); readers may ignore it
    ]
)


def table(columns: Mapping[str, Any], schema: pa.Schema) -> pa.Table:
    """Build a table with exactly ``schema``'s columns; 2-D arrays become list<float32>."""
    n_rows = len(next(iter(columns.values()))) if columns else 0
    optional = optional_vectors()
    columns = {**{c: np.zeros((n_rows, 0), np.float32) for c in schema.names if c in optional or c.startswith("desc_")},
               **{c: np.full(n_rows, v) for c, v in OPTIONAL_SCALARS.items() if c in schema.names}, **columns}
    missing = [n for n in schema.names if n not in columns]
    if missing:
        raise KeyError(f"columns missing for schema: {missing}")
    arrays = []
    for field in schema:
        value = columns[field.name]
        if field.type == VECTOR and isinstance(value, np.ndarray) and value.ndim == 2:
            flat = pa.array(value.astype(np.float32, copy=False).ravel(), type=pa.float32())
            offsets = pa.array(np.arange(0, value.size + 1, max(value.shape[1], 1), dtype=np.int32)
                               if value.shape[1] else np.zeros(len(value) + 1, dtype=np.int32))
            arrays.append(pa.ListArray.from_arrays(offsets, flat))
        else:
            arrays.append(pa.array(value, type=field.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)


def vectors(tbl: pa.Table, column: str) -> npt.NDArray[np.float32]:
    """A ``list<float32>`` column as a dense ``(n_rows, dim)`` array."""
    col = tbl.column(column).combine_chunks()
    n = len(col)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(n, -1)


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


def measured_masks(tbl: pa.Table, modalities: list[str] | tuple[str, ...]) -> dict[str, npt.NDArray[np.bool_]]:
    """Per modality, ``(n_rows,)`` True where the segment could measure it: the ``unmeasured``
    column (list of modality names, e.g. rhythm of a 0.5 fps source) read as masks; {} without it."""
    if "unmeasured" not in tbl.column_names:
        return {}
    lists = tbl.column("unmeasured").to_pylist()
    return {m: np.array([m not in (u or ()) for u in lists], bool) for m in modalities}


def durations(tbl: pa.Table) -> npt.NDArray[np.float64]:
    """``(n_rows,)`` segment durations in seconds."""
    return np.asarray(tbl.column("t_end"), np.float64) - np.asarray(tbl.column("t_start"), np.float64)


# ---------------------------------------------------------------------------------------- run.json
# The run record: one JSON object per output folder, written by the runners, the activities step,
# assign and the report, always through handclust.io.run_record.update_run (which checks the keys and
# top-level types below). Values inside the blocks are documented where they are made.
RUN_RECORD: dict[str, tuple[type, ...]] = {
    "status": (str,),  # "ok" | "failed" (a failed attempt keeps the earlier run's tables and record)
    "error": (str, type(None)),  # why the last attempt failed, one line naming the fix (null once a run succeeds)
    "failed_attempt": (dict,),  # when, config, overrides and footage of the failed attempt
    "mode": (str,),  # "assign" for `handclust assign` runs; absent for discovery runs
    "assigned_from": (str,),  # assign: the run whose activities new clips were placed into
    "config": (dict,),  # the full RunConfig of the run (config_to_dict)
    "footage": (str, list),  # what was given: a folder, a manifest or a list of paths
    "versions": (dict,),  # package versions (handclust, torch, ray, ...)
    "timings": (dict,),  # seconds per step
    "summary": (dict,),  # the CLI's summary: clips, segments, activities, noise, labels, report path, ...
    "feature_fingerprint": (str,),  # the feature config hash that resume compares
    "encoders": (dict,),  # learned encoders checked before decoding: model, device, dtype
    "clustering": (dict, type(None)),  # fusion weights and why, k and why, backends, temporal model
    "hierarchy": (dict,),  # the coarse groups over activities and their merge tree
    "clip_groups": (dict,),  # groups of clips clustered apart (cluster.split_groups): count, why, clips and paths per group
    "cost": (dict,),  # measured compute beside the estimate, labelling spend
    "report": (dict,),  # status, paths, seconds and problems of the HTML report
}
