"""A finished run's outputs, read once into one typed object (:class:`RunData`) that the report's parts draw from."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from handclust import schema
from handclust.io import layout
from handclust.io.run_record import read_run
from handclust.io.run_tables import check_segments_cover
from handclust.io.storage import OutputStore
from handclust.reporting.labelling import labels_summary, typical_segments

log = logging.getLogger(__name__)

NOT_COMPUTED = "not computed"
MAX_ACTIVITIES = 60  # activities with a gallery and a reel chapter
PHASE_NONE = "no phase"
SEGMENT_COLUMNS = ["clip_id", "segment_id", "seg_idx", "t_start", "t_end", "boundary_detectors", "rhythm_period_s",
                   "rhythm_strength", "repetition_period_s"]


def dig(d: Any, *keys: str) -> Any:
    """``d[k1][k2]...`` or None when any level is missing."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


@dataclass
class RunData:
    """Everything the report reads from a run's outputs (pandas frames; optional parts may be None)."""

    store: OutputStore
    clips: pd.DataFrame  # with ``name`` (file name) and ``phase`` ("no phase" when unknown)
    segments: pd.DataFrame  # ok clips' segments, with cluster / probability / activity / reassigned / phase
    run: dict[str, Any]
    evaluation: dict[str, Any] | None
    labels: pd.DataFrame | None
    embedding: pd.DataFrame | None
    ablations: pd.DataFrame | None  # with ``shown``: the fused activity each variant's cluster matches
    names: dict[int, str] = field(default_factory=dict)  # cluster -> label (only labelled ones)
    problems: list[str] = field(default_factory=list)
    labels_summary: dict[str, Any] | None = None  # handclust.reporting.labelling.labels_summary of labels.parquet
    decoded: dict[Any, Any] = field(default_factory=dict)  # excerpt -> frames or error (report.excerpts)

    def excerpt(self, clip_id: str, t_start: float, t_end: float, n: int, width: int) -> tuple[Any, ...]:
        """The key of one excerpt (the arguments of read_range); KeyError for a clip the run does not know."""
        return (self.paths[clip_id], float(t_start), float(t_end), int(n), int(width))

    def frames(self, clip_id: str, t_start: float, t_end: float, n: int, width: int) -> list[Any]:
        """Frames of one excerpt: decoded in advance (on Ray workers after a Ray run), else here.
        Raises VideoError with the decoder's message when it could not be decoded."""
        from handclust.io.video import VideoError
        from handclust.reporting.report.excerpts import decode_one

        key = self.excerpt(clip_id, t_start, t_end, n, width)
        got = self.decoded[key] if key in self.decoded else decode_one(key)
        if isinstance(got, str):
            raise VideoError(got)
        return got

    @functools.cached_property
    def missing_clips(self) -> set[str]:
        """Ok clips whose file is no longer where the run found it (local paths only): no keyframes from them."""
        ok = self.ok_clips
        return {c for c, p in zip(ok.clip_id, ok.path) if isinstance(p, str) and "://" not in p and not Path(p).exists()}

    @functools.cached_property
    def ablation_strips(self) -> dict[str, pd.DataFrame]:
        """Per clip id: the rows of ``ablations`` other than the run's own (fusion) variant."""
        if self.ablations is None:
            return {}
        ab = self.ablations[~self.ablations.variant.astype(str).str.startswith("fusion")]
        ab = ab.merge(self.segments[["segment_id", "clip_id"]], on="segment_id", how="inner", suffixes=("_ab", ""))
        return {str(c): g for c, g in ab.groupby("clip_id", sort=False)}

    @property
    def ok_clips(self) -> pd.DataFrame:
        return self.clips[self.clips.status.isin(["ok", "partial"])]

    @property
    def activities(self) -> list[int]:
        return sorted(int(c) for c in self.segments.cluster.unique() if c >= 0)

    @property
    def paths(self) -> dict[str, str]:
        return dict(zip(self.clips.clip_id, self.clips.path))

    @property
    def clip_names(self) -> dict[str, str]:
        return dict(zip(self.clips.clip_id, self.clips.name))

    def name(self, cluster: int) -> str:
        return self.names.get(int(cluster)) or f"activity {int(cluster)}"

    def description(self, cluster: int) -> str:
        if self.labels is None or "description" not in self.labels:
            return ""
        d = self.labels[self.labels.cluster == cluster].description
        return str(d.iloc[0]) if len(d) and isinstance(d.iloc[0], str) else ""

    def map_method(self) -> str:
        backend = dig(self.run, "clustering", "backends", "map_2d") or dig(self.run, "summary", "backends", "map_2d")
        return str(backend) if backend else "method not recorded"


def _read_optional(store: OutputStore, rel: str, problems: list[str]) -> pa.Table | None:
    if not store.exists(rel):
        return None
    try:
        return store.read_table(rel)
    except Exception as exc:  # a broken optional table must not cost the whole report
        problems.append(f"{rel} could not be read: {exc}")
        log.warning("report: %s could not be read: %s", rel, exc)
        return None


def _pandas(tbl: pa.Table | None) -> pd.DataFrame | None:
    return None if tbl is None else tbl.to_pandas()


def align_to_fused(ablations: pd.DataFrame, segments: pd.DataFrame) -> pd.DataFrame:
    """Add ``shown``: each variant's cluster renamed to the fused activity it shares most time with.

    Ablation cluster ids are arbitrary; matched one-to-one to the fused clusters (Hungarian, on
    shared seconds), the same colour means the same activity in every strip when the variants
    agree. Clusters left unmatched get fresh ids after the fused ones; noise stays -1.
    """
    from scipy.optimize import linear_sum_assignment

    seconds = segments.set_index("segment_id").eval("t_end - t_start")
    fused = segments.set_index("segment_id").cluster
    ab = ablations.reset_index(drop=True)
    ab["cluster"] = ab.cluster.astype(int)
    ab["shown"] = ab.cluster
    next_id = int(max(fused.max() if len(fused) else -1, -1)) + 1
    for _, g in ab.groupby("variant", sort=False):
        f = fused.reindex(g.segment_id).to_numpy()
        w = seconds.reindex(g.segment_id).fillna(0.0).to_numpy()
        own = g.cluster.to_numpy()
        ids_v = np.unique(own[own >= 0])
        ids_f = np.unique(f[np.isfinite(f) & (f >= 0)]).astype(int) if len(f) else np.zeros(0, int)
        mapping: dict[int, int] = {-1: -1}
        if len(ids_v) and len(ids_f):
            # Shared seconds of every (variant cluster, fused cluster) pair in one bincount, not a pass
            # over all segments per pair (100 x 100 clusters x 1M segments per variant at scale).
            both = (own >= 0) & np.isfinite(f) & (f >= 0)
            pair = np.searchsorted(ids_v, own[both]) * len(ids_f) + np.searchsorted(ids_f, f[both].astype(int))
            overlap = np.bincount(pair, weights=w[both], minlength=len(ids_v) * len(ids_f)).reshape(len(ids_v), len(ids_f))
            rows, cols = linear_sum_assignment(-overlap)
            mapping.update({int(ids_v[r]): int(ids_f[c]) for r, c in zip(rows, cols) if overlap[r, c] > 0})
        extra = next_id
        for a in ids_v:
            if int(a) not in mapping:
                mapping[int(a)] = extra
                extra += 1
        ab.loc[g.index, "shown"] = [mapping.get(int(c), -1) for c in own]
    return ab


def load_run(store: OutputStore) -> RunData:
    """Read the tables and JSON files of a finished run (``clips.parquet`` at least)."""
    if not store.exists(layout.CLIPS):
        raise FileNotFoundError(f"{store.uri}/clips.parquet not found: is {store.uri} a HandClust output directory?")
    problems: list[str] = []
    clips_tbl = store.read_table(layout.CLIPS)
    clips = clips_tbl.to_pandas()
    clips["name"] = [Path(str(p)).name for p in clips.path]
    clips["phase"] = clips.phase.fillna(PHASE_NONE).replace("", PHASE_NONE)
    run = read_run(store)
    evaluation = store.read_json(layout.EVAL) if store.exists(layout.EVAL) else None

    ok = clips_tbl.filter(pc.is_in(clips_tbl.column("status"), value_set=pa.array(["ok", "partial"]))).column("clip_id")
    # The columns the report draws, of the ok clips, in one parallel dataset read (per-clip files or compacted parts).
    seg = store.read_dataset("segments", schema.SEGMENTS, columns=SEGMENT_COLUMNS, clip_ids=ok.to_pylist()).to_pandas()
    seg = seg.sort_values(["clip_id", "seg_idx"], kind="stable").reset_index(drop=True)
    clusters = _pandas(_read_optional(store, layout.CLUSTERS, problems))
    if clusters is not None and len(clusters):
        check_segments_cover(store, clusters.segment_id.tolist(), seg.segment_id.tolist(), "the report")
        seg = seg.merge(clusters.drop(columns=["clip_id"]), on="segment_id", how="left")
    for col, default in (("cluster", -1), ("activity", -1), ("probability", 0.0), ("reassigned", False)):
        if col not in seg:
            seg[col] = default
        seg[col] = seg[col].fillna(default)
    seg["cluster"] = seg.cluster.astype(int)
    seg["activity"] = seg.activity.astype(int)
    seg["phase"] = seg.clip_id.map(dict(zip(clips.clip_id, clips.phase))).fillna(PHASE_NONE)

    labels_tbl = _read_optional(store, layout.LABELS, problems)
    labels = _pandas(labels_tbl)
    names: dict[int, str] = {}
    if labels is not None and "label" in labels:
        names = {int(r.cluster): str(r.label) for r in labels.itertuples() if isinstance(r.label, str) and r.label}
    summary = labels_summary(labels_tbl) if labels_tbl is not None and "status" in labels_tbl.column_names else None
    ablations = _pandas(_read_optional(store, layout.ABLATIONS, problems))
    if ablations is not None and not {"segment_id", "variant", "cluster"} <= set(ablations.columns):
        problems.append("ablations.parquet lacks segment_id / variant / cluster columns; per-modality strips not drawn")
        ablations = None
    if ablations is not None:
        ablations = align_to_fused(ablations, seg)
    embedding = _pandas(_read_optional(store, layout.EMBEDDING_2D, problems))
    return RunData(store, clips, seg, run, evaluation, labels, embedding, ablations, names, problems, summary)


def example_segments(data: RunData, cluster: int, n: int) -> pd.DataFrame:
    """The ``n`` most typical segments of a cluster whose clip is still readable.

    The labeller's choice (``labels.parquet`` ``segment_ids``) when there is one, so the report
    shows what the model saw; else the labeller's rule (:func:`handclust.reporting.labelling.typical_segments`:
    membership, nearness to the cluster's centre, one segment per clip before a second) on the 2-D
    map, the one space of segment descriptors a run keeps.
    """
    members = data.segments[(data.segments.cluster == cluster) & ~data.segments.clip_id.isin(data.missing_clips)]
    if data.labels is not None and "segment_ids" in data.labels:
        row = data.labels[data.labels.cluster == cluster]
        ids = list(row.segment_ids.iloc[0]) if len(row) and row.segment_ids.iloc[0] is not None else []
        chosen = members.set_index("segment_id").reindex([i for i in ids if i in set(members.segment_id)])
        if len(chosen):
            return chosen.reset_index().head(n)
    if not len(members):
        return members
    pts = np.zeros((len(members), 0))
    if data.embedding is not None:
        xy = members[["segment_id"]].merge(data.embedding[["segment_id", "x", "y"]], on="segment_id", how="left")
        pts = xy[["x", "y"]].to_numpy(dtype=float)
        if not np.isfinite(pts).all():
            pts = np.zeros((len(members), 0))
    idx = typical_segments(np.zeros(len(members), np.int32), members.probability.to_numpy(dtype=np.float32), pts, n,
                           clip_ids=members.clip_id.to_numpy())
    return members.iloc[idx.get(0, np.zeros(0, int))]
