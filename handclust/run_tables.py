"""Reading a run's per-clip tables back as one: what the activities step, evaluation and
``assign`` share about which clips count."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from handclust import schema
from handclust.storage import OutputStore

DONE_STATES = ("ok", "partial")  # a clip in one of these has frames and segments to use


def ok_segments(store: OutputStore, clips_tbl: pa.Table, columns: list[str] | None = None) -> pa.Table:
    """The segments of every clip whose status is ``ok`` or ``partial``, in :func:`clip_order` and
    segment index order; ``columns`` only, when given (``clip_id`` and ``seg_idx`` always)."""
    ok = pc.is_in(clips_tbl.column("status"), value_set=pa.array(DONE_STATES))
    ids = clips_tbl.filter(ok).column("clip_id")
    if columns is not None:
        columns = list(dict.fromkeys(["clip_id", "seg_idx", *columns]))
    # One parallel dataset read of the done clips' files and parts, not a request per file in turn.
    seg = store.read_dataset("segments", schema.SEGMENTS, columns=columns, clip_ids=ids.to_pylist())
    rank = pc.index_in(seg.column("clip_id"), value_set=pa.array(clip_order(clips_tbl), pa.string()))
    return seg.append_column("_rank", rank).sort_by([("_rank", "ascending"), ("seg_idx", "ascending")]).drop_columns(["_rank"])


def clip_order(clips_tbl: pa.Table) -> list[str]:
    """Clip ids by file name, then id. Clustering draws random samples over the rows in this order,
    so it must not depend on where the footage sits: clip ids hash the absolute path, and ordering
    by them gave other fusion weights for the same files in another folder."""
    ids = clips_tbl.column("clip_id").to_pylist()
    names = [str(p).rstrip("/").rsplit("/", 1)[-1] for p in clips_tbl.column("path").to_pylist()]
    return [c for _, c in sorted(zip(names, ids, strict=True))]
