"""Reading a run's per-clip tables back as one: what the activities step, evaluation and
``assign`` share about which clips count."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from handclust import schema
from handclust.storage import OutputStore

DONE_STATES = ("ok", "partial")  # a clip in one of these has frames and segments to use


def ok_segments(store: OutputStore, clips_tbl: pa.Table) -> pa.Table:
    """The segments of every clip whose status is ``ok`` or ``partial``, ordered by clip and segment index."""
    seg = store.read_dataset("segments", schema.SEGMENTS)
    ok = pc.is_in(clips_tbl.column("status"), value_set=pa.array(DONE_STATES))
    ids = clips_tbl.filter(ok).column("clip_id")
    seg = seg.filter(pc.is_in(seg.column("clip_id"), value_set=ids))
    return seg.sort_by([("clip_id", "ascending"), ("seg_idx", "ascending")])
