"""Outputs at scale: statuses read in bulk (one ledger, not four requests per clip), per-clip tables
compacted into parts after the stream, and every reader (the run's own, pyarrow, pandas, duckdb)
agreeing before and after compaction, after an interrupted one, and after a clip is processed again."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from handclust import schema
from handclust.io.footage import Clip
from handclust.io.run_tables import ok_segments
from handclust.io.storage import PART_INDEX, OutputStore, compact_clip_tables
from handclust.pipeline import clips_table, compact_outputs
from handclust.runtime.clip_job import Ledger, is_committed, status_rel
from handclust.synthetic.footage_v1 import planted_segments_table

FP = "fingerprint-1"


def write_run(store: OutputStore, n_segments: int = 600, n_clips: int = 30) -> tuple[list[Clip], pa.Table]:
    """Per-clip segments/, frames/ and status/ as a runner commits them."""
    seg, _ = planted_segments_table(n_segments, n_clips, n_activities=4, seed=1)
    clips = []
    for cid in dict.fromkeys(seg.column("clip_id").to_pylist()):
        part = seg.filter(pc.equal(seg.column("clip_id"), cid))
        store.write_table(f"segments/{cid}.parquet", part)
        n = part.num_rows
        store.write_table(f"frames/{cid}.parquet", schema.table({
            "clip_id": [cid] * n, "frame_idx": np.arange(n, dtype=np.int32), "t": np.arange(n) * 0.5,
            "fresh": np.ones(n, bool), "motion_dt": np.full(n, 0.5, np.float32), "flow_mag_mean": np.ones(n, np.float32),
            "flow_mag_p90": np.ones(n, np.float32), "flow_direction_hist": np.ones((n, 8), np.float32),
            "flow_grid": np.ones((n, 16), np.float32), **{k: np.zeros(n, np.float32) for k in (
                "ego_tx", "ego_ty", "ego_rotation", "ego_scale", "ego_residual", "ego_ratio", "ego_inliers")},
            "scene_embedding": np.ones((n, 4), np.float32), "hand_source": np.zeros(n, np.int8)}, schema.FRAMES))
        clip = Clip(cid, f"/footage/{cid}.mp4", 100, None)
        store.write_json(status_rel(cid), {"clip_id": cid, "path": clip.path, "status": "ok", "fingerprint": FP,
                                           "n_segments": n, "duration_s": 4.0 * n})
        clips.append(clip)
    return clips, seg


def sorted_ids(tbl: pa.Table | pd.DataFrame) -> list[str]:
    col = tbl.column("segment_id").to_pylist() if isinstance(tbl, pa.Table) else tbl["segment_id"].tolist()
    return sorted(col)


def test_ledger_reads_every_status_in_bulk_and_agrees_with_per_clip_checks(tmp_path):
    store = OutputStore(tmp_path)
    clips, _ = write_run(store)
    store.write_json(status_rel(clips[3].clip_id), {"status": "error", "fingerprint": FP})
    (tmp_path / "frames" / f"{clips[4].clip_id}.parquet").unlink()  # killed before its frames were written
    ledger = Ledger.read(store, [c.clip_id for c in clips])
    for c in clips:
        assert is_committed(store, c, FP, ledger) == is_committed(store, c, FP)
    assert sum(is_committed(store, c, FP, ledger) for c in clips) == len(clips) - 2
    assert not is_committed(store, clips[0], "another-config", ledger)
    tbl = clips_table(store, clips)
    assert tbl.column("status").to_pylist().count("ok") == len(clips) - 1


def test_compaction_keeps_every_reader_in_agreement(tmp_path):
    import duckdb

    store = OutputStore(tmp_path)
    clips, seg = write_run(store)
    clips_tbl = clips_table(store, clips)
    before = ok_segments(store, clips_tbl)
    assert compact_outputs(store, min_files=10_000) == {"segments": 0, "frames": 0}  # below the threshold: untouched
    merged = compact_outputs(store, min_files=1)
    assert merged == {"segments": len(clips), "frames": len(clips)}
    files = sorted(p.name for p in (tmp_path / "segments").glob("*.parquet"))
    assert len(files) == 1 and files[0].startswith("part-")  # 30 objects became one
    after = ok_segments(store, clips_tbl)
    assert after.equals(before)  # same rows, same order
    assert sorted_ids(pd.read_parquet(tmp_path / "segments")) == sorted_ids(seg)
    n = duckdb.sql(f"select count(*) from '{tmp_path}/segments/*.parquet'").fetchall()[0][0]
    assert n == seg.num_rows
    # Resume still sees every clip as done, from the part index.
    ledger = Ledger.read(store)
    assert all(is_committed(store, c, FP, ledger) and is_committed(store, c, FP) for c in clips)
    # One clip's rows, as the report reads them, from the part.
    one = store.read_dataset("frames", schema.FRAMES, columns=["clip_id", "t"], clip_ids=[clips[5].clip_id])
    assert set(one.column("clip_id").to_pylist()) == {clips[5].clip_id} and one.num_rows > 0


def test_a_clip_processed_again_after_compaction_replaces_its_rows(tmp_path):
    store = OutputStore(tmp_path)
    clips, seg = write_run(store)
    compact_clip_tables(store, "segments", schema.SEGMENTS)
    cid = clips[2].clip_id
    # The clip is processed again (another segmentation): its own file is newer than its rows in the part.
    again = seg.filter(pc.equal(seg.column("clip_id"), cid)).slice(0, 3)
    again = again.set_column(again.schema.get_field_index("segment_id"), "segment_id", pa.array(["new-a", "new-b", "new-c"]))
    store.write_table(f"segments/{cid}.parquet", again)  # also what an interrupted compaction leaves: part + own file
    got = store.read_dataset("segments", schema.SEGMENTS)
    mine = got.filter(pc.equal(got.column("clip_id"), cid)).column("segment_id").to_pylist()
    assert mine == ["new-a", "new-b", "new-c"]
    assert got.num_rows == seg.num_rows - (seg.num_rows // len(clips)) + 3
    # The next compaction drops the stale rows from the old part, so a plain folder read agrees.
    compact_clip_tables(store, "segments", schema.SEGMENTS)
    assert sorted_ids(pd.read_parquet(tmp_path / "segments")) == sorted_ids(got)
    index = store.read_json(f"segments/{PART_INDEX}")
    holders = [p for p, ids in index.items() if cid in ids]
    assert len(holders) == 1 and all((tmp_path / "segments" / p).exists() for p in index)


def test_ledger_and_compaction_on_an_object_store(s3_bucket):
    """The same on a real S3 API (moto's server on loopback), where every request is a round trip."""
    store = OutputStore(f"{s3_bucket('handclust-ledger')}/run")
    assert store.read_json_or("status/none.json", {}) == {}  # a missing object is "none", in one request
    clips, _ = write_run(store, n_segments=240, n_clips=12)
    tbl = clips_table(store, clips)
    before = ok_segments(store, tbl)
    assert compact_outputs(store, min_files=1) == {"segments": 12, "frames": 12}
    assert ok_segments(store, tbl).equals(before)
    assert all(n.startswith("part-") for n in store.list("segments", ".parquet"))
    ledger = Ledger.read(store)
    assert all(is_committed(store, c, FP, ledger) for c in clips)


def test_a_removed_clip_leaves_the_compacted_parts_and_comes_back(tmp_path):
    """After compaction a clip's rows sit in a part; a clip that leaves the footage must leave the folder
    globs too (set aside as its own file under .removed/), and come back whole when it returns."""
    from handclust.io.run_tables import SET_ASIDE, restore_clips, set_aside_other_clips

    store = OutputStore(tmp_path)
    clips, seg = write_run(store)
    compact_outputs(store, min_files=1)
    gone, redone = clips[3].clip_id, clips[7].clip_id
    # redone was processed again after compaction: its own file (3 rows) wins over its rows in the part.
    again = seg.filter(pc.equal(seg.column("clip_id"), redone)).slice(0, 3)
    store.write_table(f"segments/{redone}.parquet", again)
    keep = {c.clip_id for c in clips} - {gone, redone}

    moved = set_aside_other_clips(store, keep)
    assert set(moved) == {gone, redone}
    for folder in ("segments", "frames"):
        left = set(pd.read_parquet(tmp_path / folder).clip_id)  # the README's glob, parts included
        assert left == keep, folder
        assert {gone, redone}.isdisjoint(set().union(*store.read_json(f"{folder}/{PART_INDEX}").values()))
        aside = pd.read_parquet(tmp_path / SET_ASIDE / folder / f"{gone}.parquet")
        assert set(aside.clip_id) == {gone} and len(aside) > 0
    ledger = Ledger.read(store)
    assert gone not in ledger.statuses and gone not in ledger.tables
    # redone's own (newer) file is what was set aside, not its stale rows from the part.
    assert sorted_ids(pd.read_parquet(tmp_path / SET_ASIDE / "segments" / f"{redone}.parquet")) == sorted_ids(again)

    assert set(restore_clips(store, [gone, redone])) == {gone, redone}
    clips_tbl = clips_table(store, clips)
    back = ok_segments(store, clips_tbl)
    want = sorted_ids(seg.filter(pc.invert(pc.equal(seg.column("clip_id"), redone))))
    assert sorted_ids(back) == sorted(want + sorted_ids(again))
    assert sorted_ids(pd.read_parquet(tmp_path / "segments")) == sorted_ids(back)
    ledger = Ledger.read(store)
    assert all(is_committed(store, c, FP, ledger) for c in clips)
