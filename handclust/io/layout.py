"""One run layout: every path a run writes under its output folder, in one place.

Tables are plain Parquet whose schema is in :mod:`handclust.schema` (:data:`TABLES` maps each path
to it); JSON records, PNG figures, the HTML report and the reel sit beside them. Per-clip files are
named by the clip id (``handclust.io.footage``: path, size, mtime and sampled bytes), so a rerun
finds exactly what it already did. docs/user-guide.md, "What comes out", describes each file.
"""

from __future__ import annotations

from handclust import schema

RUN = "run.json"  # the run record: config, versions, timings, fusion weights and why, cost, status
CLIPS = "clips.parquet"  # one row per clip: status, duration, fingerprint
CLUSTERS = "clusters.parquet"  # one row per segment: cluster (-1 noise), activity, membership
HIERARCHY = "hierarchy.parquet"  # each fine activity -> its coarse group
EMBEDDING_2D = "embedding_2d.parquet"  # the 2-D map of all segments
NEIGHBOURS = "neighbours.parquet"  # the kNN graph of the fused descriptors
LABELS = "labels.parquet"  # Gemini's names of the activities
ABLATIONS = "ablations.parquet"  # the activity of each segment under each modality subset
EVAL = "eval.json"  # scores: phase, cross-clip mixing, ground truth, ablations, per clip
LOCK = ".handclust-lock.json"  # the one-writer lock on the output folder (io.run_lock)

FRAMES_DIR, SEGMENTS_DIR, STATUS_DIR, TIMELINES_DIR = "frames", "segments", "status", "timelines"
MODEL_DIR = "model"  # what `handclust assign` needs to place new footage without refitting
FUSION = f"{MODEL_DIR}/fusion.npz"  # per-modality scaling, PCA and weights
REFERENCE = f"{MODEL_DIR}/reference.parquet"  # the fused reference vectors and their activities
INDEX = f"{MODEL_DIR}/index.faiss"  # a FAISS index over them
CLUSTERING_CHECKPOINT = f"{MODEL_DIR}/clustering.json"  # written last by the clustering step: its tables are complete
MODEL_ABLATIONS = f"{MODEL_DIR}/ablations.parquet"  # the ablations computed with the run's own models
TIMELINES_PNG = f"{TIMELINES_DIR}/timelines.png"  # the overview of the first clips
REPORT_DIR = "report"
REPORT = f"{REPORT_DIR}/index.html"
REEL = f"{REPORT_DIR}/reel.mp4"
REEL_JSON = f"{REPORT_DIR}/reel.json"


def frames(clip_id: str) -> str:
    """Per-frame features of one clip."""
    return f"{FRAMES_DIR}/{clip_id}.parquet"


def segments(clip_id: str) -> str:
    """Segments of one clip, with one descriptor column per modality."""
    return f"{SEGMENTS_DIR}/{clip_id}.parquet"


def status(clip_id: str) -> str:
    """One clip's status record (ok / failed / too short, and why)."""
    return f"{STATUS_DIR}/{clip_id}.json"


def timeline_json(clip_id: str) -> str:
    return f"{TIMELINES_DIR}/{clip_id}.json"


def timeline_png(clip_id: str) -> str:
    return f"{TIMELINES_DIR}/{clip_id}.png"


# Each table's schema. segments/ and frames/ follow the modality registry (schema.SEGMENTS, schema.FRAMES),
# and model/reference.parquet the width of the fused vectors (schema.reference(dim)).
TABLES = {CLIPS: schema.CLIPS, CLUSTERS: schema.CLUSTERS, HIERARCHY: schema.HIERARCHY, EMBEDDING_2D: schema.EMBEDDING_2D,
          NEIGHBOURS: schema.NEIGHBOURS, LABELS: schema.LABELS, ABLATIONS: schema.ABLATIONS, MODEL_ABLATIONS: schema.ABLATIONS}
