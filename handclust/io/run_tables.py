"""Reading a run's per-clip tables back as one: what the activities step, evaluation and
``assign`` share about which clips count; and keeping the per-clip files to the clips of the run
(:func:`set_aside_other_clips`), so every table and glob agrees with ``clusters.parquet``."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from handclust import schema
from handclust.io.storage import OutputStore

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


class SegmentDescriptors(Mapping[str, npt.NDArray[np.float32]]):
    """The descriptor columns of ``segments`` (a table :func:`ok_segments` read without them), one
    at a time: ``descriptors[name]`` reads modality ``name``'s column (``columns[name]``) from the
    run's Parquet files when it is asked for and returns it ``(n_segments, dim)`` float32 in
    ``segments``' row order, non-finite values set as fusion reads them (``np.nan_to_num``).

    Nothing is cached and no other column is read with it: fusion, which takes the modalities one
    after the other and keeps only each one's reduced block, then holds one modality's
    descriptors at a time instead of every modality's (at the GPU job's widths, 1,024 of 1,885
    dims; issue 22, point 6). The column is streamed in record batches straight into the array,
    each row placed by its (clip, ``seg_idx``), so neither a whole-column Arrow table nor the order
    in which the batches arrive matters.
    """

    def __init__(self, store: OutputStore, segments: pa.Table, columns: Mapping[str, str]) -> None:
        self._store, self._columns = store, dict(columns)
        clips = segments.column("clip_id").unique()
        self._clips = pa.array(clips.to_pylist(), pa.string())
        codes = np.asarray(pc.index_in(segments.column("clip_id"), value_set=self._clips), np.int64)
        seg_idx = np.asarray(segments.column("seg_idx"), np.int64)
        self._stride = int(seg_idx.max()) + 1 if len(seg_idx) else 1
        keys = codes * self._stride + seg_idx  # (n,) one integer per segment: (clip, seg_idx)
        self._order = np.argsort(keys, kind="stable")
        self._sorted = keys[self._order]
        if len(keys) > 1 and not (np.diff(self._sorted) > 0).all():
            at = int(self._order[np.flatnonzero(np.diff(self._sorted) == 0)[0]])
            raise ValueError(f"{store.uri_of('segments')} holds segment {seg_idx[at]} of clip {segments.column('clip_id')[at]} "
                             "twice: remove the older file of that clip and run again")

    def __len__(self) -> int:
        return len(self._columns)

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __getitem__(self, name: str) -> npt.NDArray[np.float32]:
        column, n = self._columns[name], len(self._sorted)
        where = f"{self._store.uri_of('segments')} ({column})"
        out: npt.NDArray[np.float32] | None = None
        filled = np.zeros(n, bool)
        for batch in self._store.scan_dataset("segments", schema.SEGMENTS, ["clip_id", "seg_idx", column],
                                              clip_ids=self._clips.to_pylist()):
            if batch.num_rows == 0:
                continue
            codes = np.asarray(pc.index_in(batch.column("clip_id"), value_set=self._clips).fill_null(-1), np.int64)
            keys = codes * self._stride + np.asarray(batch.column("seg_idx"), np.int64)
            at = np.minimum(np.searchsorted(self._sorted, keys), max(n - 1, 0))
            if (codes < 0).any() or not np.array_equal(self._sorted[at], keys):
                raise ValueError(f"{where} holds segments that the run's table does not: the folder changed "
                                 "while it was read; run again")
            rows = self._order[at]
            if filled[rows].any():
                raise ValueError(f"{where} holds a segment twice: remove the older file of that clip and run again")
            filled[rows] = True
            col = batch.column(column)
            if col.null_count:
                raise ValueError(f"{where}: {col.null_count} segments have no descriptor (written by an older version "
                                 "without it?): describe those clips again (delete their status/ records) and rerun")
            flat = col.flatten().to_numpy(zero_copy_only=False)
            if out is None:
                dim = len(flat) // batch.num_rows
                out = np.empty((n, dim), np.float32)
            if len(flat) != batch.num_rows * out.shape[1]:
                raise ValueError(f"{where}: descriptors of different lengths in one run (expected {out.shape[1]} values "
                                 "each): the clips were described with different feature configs; rerun them with one")
            out[rows] = flat.reshape(batch.num_rows, out.shape[1])
        if not filled.all():
            raise ValueError(f"{where} lacks {int((~filled).sum())} of the run's segments: the folder changed while it "
                             "was read; run again")
        # Arrow's allocator keeps the decoded pages it freed (mimalloc: 0.6 GB after reading 30k x 1,024
        # float32, for a 0.12 GB result); numpy cannot use that memory, so hand it back now.
        pa.default_memory_pool().release_unused()
        if out is None:
            return np.zeros((0, 0), np.float32)
        for a in range(0, n, 1 << 16):  # in place, a block at a time: no second (n, dim) array
            np.nan_to_num(out[a:a + (1 << 16)], copy=False)
        return out


def by_clip(clips_tbl: pa.Table, column: str) -> dict[str, Any]:
    """``{clip_id: value}`` of one column of ``clips.parquet`` (a clip's path, phase, ...)."""
    return dict(zip(clips_tbl.column("clip_id").to_pylist(), clips_tbl.column(column).to_pylist(), strict=True))


def clip_order(clips_tbl: pa.Table) -> list[str]:
    """Clip ids by file name, then id. Clustering draws random samples over the rows in this order,
    so it must not depend on where the footage sits: clip ids hash the absolute path, and ordering
    by them gave other fusion weights for the same files in another folder."""
    ids = clips_tbl.column("clip_id").to_pylist()
    names = [str(p).rstrip("/").rsplit("/", 1)[-1] for p in clips_tbl.column("path").to_pylist()]
    return [c for _, c in sorted(zip(names, ids, strict=True))]


# The files kept per clip, as (folder, suffix); the file name is the clip id.
PER_CLIP_FILES = (("status", ".json"), ("frames", ".parquet"), ("segments", ".parquet"), ("timelines", ".json"),
                  ("timelines", ".png"))
COMPACTED = ("frames", "segments")  # folders a large run compacts into part-*.parquet
SET_ASIDE = ".removed"  # hidden: pandas/pyarrow datasets and `OUT/segments/*.parquet` globs never read it
_CLIP_ID = re.compile(r"[0-9a-f]{16}")


def set_aside_other_clips(store: OutputStore, keep: set[str]) -> list[str]:
    """Move the per-clip files of every clip not in ``keep`` (removed from the footage, or replaced:
    a changed file has a new id) to ``OUT/.removed/<folder>/``; returns their clip ids.

    Moved aside rather than deleted: a clip that comes back unchanged (a folder unmounted for one
    run, a manifest edited by mistake) is restored by :func:`restore_clips` instead of decoded again.
    """
    from handclust.io.storage import take_clips_out_of_parts

    moved: set[str] = set()
    for folder, suffix in PER_CLIP_FILES:
        own: set[str] = set()
        for name in store.list(folder, suffix):
            cid = name[: -len(suffix)]
            if cid in keep or not _CLIP_ID.fullmatch(cid):  # timelines/timelines.png is the run's, not a clip's
                continue
            store.move(f"{folder}/{name}", f"{SET_ASIDE}/{folder}/{name}")
            own.add(cid)
        if folder in COMPACTED:  # after compaction a clip's rows may sit in a part, not in a file of its own
            own |= take_clips_out_of_parts(store, folder, keep, f"{SET_ASIDE}/{folder}", own_moved=own)
        moved |= own
    return sorted(moved)


def restore_clips(store: OutputStore, clip_ids: list[str]) -> list[str]:
    """Move back the files :func:`set_aside_other_clips` set aside for ``clip_ids``; returns those restored."""
    restored = []
    for cid in clip_ids:
        if not store.exists(f"{SET_ASIDE}/status/{cid}.json"):
            continue
        # The status last, as a commit writes it: a status always has its tables beside it.
        for folder, suffix in [*PER_CLIP_FILES[1:], PER_CLIP_FILES[0]]:
            rel = f"{folder}/{cid}{suffix}"
            if store.exists(f"{SET_ASIDE}/{rel}"):
                store.move(f"{SET_ASIDE}/{rel}", rel)
        restored.append(cid)
    return restored


def check_segments_cover(store: OutputStore, clustered: list[str], segment_ids: list[str], what: str) -> None:
    """Refuse (``FileNotFoundError``) to rebuild ``what`` from a run whose ``segments/`` lacks segments
    that ``clusters.parquet`` has (deleted, moved, a half-copied folder): the result would be a worse
    one written over a good one."""
    missing = set(clustered) - set(segment_ids)
    if missing:
        raise FileNotFoundError(
            f"{store.uri_of('segments')}: {len(missing)} of the {len(set(clustered))} segments in clusters.parquet are "
            f"missing (segments/ deleted, moved or partly copied?); {what} left as it was. Restore the folder, or rerun "
            "`handclust run FOOTAGE --out` into it to rebuild the segments")
