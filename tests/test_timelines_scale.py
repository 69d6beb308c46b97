"""Timelines of many clips: one JSON and one PNG per clip, an overview capped with a note, and the
per-clip records built by grouping (not by filtering all segments once per clip)."""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa

from handclust.core.clustering import Clustering
from handclust.io.storage import OutputStore
from handclust.progress import Progress
from handclust.reporting.timeline import _clip_records, write_timelines


def many_clips(n_clips: int, per_clip: int, seed: int = 0) -> tuple[pa.Table, pa.Table, Clustering]:
    rng = np.random.default_rng(seed)
    ids = [f"clip{i:05d}" for i in range(n_clips)]
    clips = pa.table({"clip_id": ids, "path": [f"/footage/{c}.mp4" for c in ids], "phase": ["a"] * n_clips,
                      "status": ["ok"] * (n_clips - 1) + ["error"], "duration_s": [per_clip * 2.0] * n_clips})
    # Rows of the clips interleaved, as a real segments table need not be sorted by clip.
    clip_col = np.repeat(ids, per_clip)
    t = np.tile(np.arange(per_clip) * 2.0, n_clips)
    shuffle = rng.permutation(len(clip_col))
    segs = pa.table({"clip_id": clip_col[shuffle].tolist(), "segment_id": [f"{c}-{x:g}" for c, x in zip(clip_col[shuffle], t[shuffle])],
                     "t_start": t[shuffle], "t_end": t[shuffle] + 2.0,
                     "boundary_detectors": [["motion"]] * len(clip_col)})
    n = segs.num_rows
    labels = rng.integers(-1, 4, n).astype(np.int32)
    act = np.where(labels < 0, 0, labels).astype(np.int32)
    c = Clustering(labels, np.ones(n, np.float32), act, labels < 0, np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32),
                   3, 2, {}, "planted")
    return clips, segs, c


def test_clip_records_hold_each_clips_segments_in_row_order():
    clips, segs, c = many_clips(30, 7)
    recs = _clip_records(clips, segs, c)
    assert len(recs) == 29  # the clip with status error has none
    ids = segs.column("clip_id").to_pylist()
    for rec in recs:
        rows = [i for i, x in enumerate(ids) if x == rec["clip_id"]]
        assert [s["segment_id"] for s in rec["segments"]] == [segs.column("segment_id")[i].as_py() for i in rows]
        assert [s["cluster"] for s in rec["segments"]] == [int(c.labels[i]) for i in rows]
        assert [s["reassigned"] for s in rec["segments"]] == [bool(c.reassigned[i]) for i in rows]


def test_many_clips_get_their_own_timelines_and_a_capped_overview(tmp_path):
    clips, segs, c = many_clips(81, 5)
    store = OutputStore(tmp_path)
    t0 = time.perf_counter()
    write_timelines(store, clips, segs, c, Progress(enabled=False), overview_max=20)
    took = time.perf_counter() - t0
    assert len(store.list("timelines", ".png")) == 80 + 1  # every ok clip, and the overview
    assert len(store.list("timelines", ".json")) == 80
    rec = json.loads((tmp_path / "timelines" / "clip00003.json").read_text())
    assert len(rec["segments"]) == 5
    from PIL import Image

    overview = Image.open(tmp_path / "timelines" / "timelines.png")
    assert overview.size[1] < 110 * (0.45 * 20 + 2)  # 20 strips tall, not 80
    # One reused figure: a new figure per clip took ~0.15 s each on this machine.
    assert took < 60, took


def test_per_clip_stats_match_the_loop_definition():
    from handclust.reporting.evaluation import per_clip_stats

    rng = np.random.default_rng(3)
    clip_ids = np.array([f"c{i}" for i in rng.integers(0, 25, 2000)], dtype=object)
    labels = rng.integers(-1, 6, 2000).astype(np.int32)
    labels[clip_ids == "c3"] = -1  # a clip of noise only
    paths = {f"c{i}": f"/f/c{i}.mp4" for i in range(25)}
    want = []
    for cid in dict.fromkeys(clip_ids.tolist()):
        lab = labels[clip_ids == cid]
        want.append({"clip_id": cid, "path": paths[cid], "variant": "v", "k": int(len(np.unique(lab[lab >= 0]))),
                     "noise_rate": float((lab < 0).mean()), "segments": int(len(lab))})
    got = per_clip_stats("v", labels, clip_ids, paths)
    assert [g["clip_id"] for g in got] == [w["clip_id"] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g == {**w, "noise_rate": g["noise_rate"]} and abs(g["noise_rate"] - w["noise_rate"]) < 1e-12


def test_a_clips_strip_shows_its_activities_in_the_report_colours(tmp_path):
    import cv2

    from handclust.colours import activity_colour
    from handclust.reporting.timeline import strip_png

    segs = [{"t_start": 0.0, "t_end": 50.0, "activity": 3, "reassigned": False},
            {"t_start": 50.0, "t_end": 100.0, "activity": 12, "reassigned": True}]
    img = cv2.imdecode(np.frombuffer(strip_png(segs, 100.0, "clip.mp4  (a)"), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (90, 1200, 3)
    want = [tuple(int(activity_colour(a).lstrip("#")[i:i + 2], 16) for i in (4, 2, 0)) for a in (3, 12)]
    left, right = img[30:60, 100:500].reshape(-1, 3), img[30:60, 700:1100].reshape(-1, 3)
    assert (left == want[0]).all(axis=1).mean() > 0.95  # the first half in activity 3's colour
    share = (right == want[1]).all(axis=1).mean()
    assert 0.5 < share < 0.9  # the second in 12's, hatched white: noise given its nearest activity


def test_report_matches_ablation_clusters_to_fused_ones_as_the_pair_loop_did():
    import pandas as pd
    from scipy.optimize import linear_sum_assignment

    from handclust.reporting.report.data import align_to_fused

    rng = np.random.default_rng(2)
    n = 4000
    seg = pd.DataFrame({"segment_id": [f"s{i}" for i in range(n)], "t_start": np.zeros(n), "t_end": rng.uniform(1, 9, n),
                        "cluster": rng.integers(-1, 9, n)})
    ab = pd.DataFrame({"segment_id": seg.segment_id.tolist()[: n - 100] + ["missing"] * 100, "variant": "scene only",
                       "cluster": rng.integers(-1, 11, n)})
    got = align_to_fused(ab, seg)
    # The definition before: shared seconds per pair by a mask over all segments, then Hungarian.
    f = seg.set_index("segment_id").cluster.reindex(ab.segment_id).to_numpy()
    w = seg.set_index("segment_id").eval("t_end - t_start").reindex(ab.segment_id).fillna(0.0).to_numpy()
    own = ab.cluster.to_numpy()
    ids_v, ids_f = np.unique(own[own >= 0]), np.unique(f[np.isfinite(f) & (f >= 0)]).astype(int)
    overlap = np.array([[w[(own == a) & (f == b)].sum() for b in ids_f] for a in ids_v])
    rows, cols = linear_sum_assignment(-overlap)
    want = {int(ids_v[r]): int(ids_f[c]) for r, c in zip(rows, cols, strict=True) if overlap[r, c] > 0}
    for a, b in want.items():
        assert set(got.shown[got.cluster == a]) == {b}
    assert set(got.shown[got.cluster < 0]) == {-1}
