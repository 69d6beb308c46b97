"""Fusion at the GPU job's widths fits the host (issue 22, point 6): one modality's descriptors at a
time, read one column at a time from the run's Parquet files, in float32 with no full-width copy
per step, and the same numbers as before (a float64 reference, and the in-memory path)."""

from __future__ import annotations

import tracemalloc
import weakref
from collections.abc import Iterator, Mapping

import numpy as np
import pyarrow.compute as pc
import pytest

from handclust import schema
from handclust.config import ClusterConfig
from handclust.core.clustering import fusion
from handclust.core.clustering.fusion import clip_style, fit_modality, fuse
from handclust.io.run_tables import SegmentDescriptors, ok_segments
from handclust.io.storage import OutputStore
from handclust.modalities import registry as modalities
from handclust.pipeline import clips_table, compact_outputs
from tests.test_fusion_vectorised import corpus, loop_normalise_within_clips
from tests.test_output_ledger import write_run


class OneAtATime(Mapping[str, np.ndarray]):
    """Descriptors made when asked for (as SegmentDescriptors reads them), remembering how many of
    the arrays it handed out were still alive when the next one was asked for."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays, self.alive_at_request = arrays, []
        self.handed: list[weakref.ref[np.ndarray]] = []

    def __len__(self) -> int:
        return len(self.arrays)

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __getitem__(self, name: str) -> np.ndarray:
        self.alive_at_request.append(sum(r() is not None for r in self.handed))
        x = self.arrays[name].copy()
        self.handed.append(weakref.ref(x))
        return x


def test_fusion_holds_one_modalitys_descriptors_at_a_time():
    x, clip_ids, rng = corpus(n=1500, n_clips=20, d=40)
    arrays = {"scene": x, "motion": rng.normal(size=(len(x), 30)).astype(np.float32),
              "video": (x[:, :24] + rng.normal(size=(len(x), 24))).astype(np.float32)}
    cfg = ClusterConfig(modalities=("scene", "motion", "video"), clip_normalise="on")
    lazy = OneAtATime(arrays)
    f = fuse(lazy, clip_ids, cfg)
    # Each modality's full-width array was let go before the next one was read (a fuse that gathered
    # the modalities first, or kept them until the end, would hold all three here).
    assert lazy.alive_at_request == [0, 0, 0]
    ref = fuse(arrays, clip_ids, cfg)
    assert np.array_equal(f.fused, ref.fused)
    assert {m: s.weight for m, s in f.scores.items()} == {m: s.weight for m, s in ref.scores.items()}


def test_a_wide_modality_is_neither_upcast_nor_copied_per_step():
    # 150k segments x 64 dims, normalised within clips: the code before issue 22 point 6 held
    # 9.3x the float32 input beside it (float64 clip means per row, a normalised copy, residuals, ...);
    # now blocks of rows, the 50k-row PCA sample and the (n, 12) output: 2.5x.
    rng = np.random.default_rng(0)
    n, d = 150_000, 64
    clip_ids = np.array([f"c{i:04d}" for i in np.sort(rng.integers(0, 300, n))], dtype=object)
    x = rng.normal(size=(n, d)).astype(np.float32)
    cfg = ClusterConfig(modalities=("scene",), clip_normalise="on", max_fit_segments=1000)
    tracemalloc.start()
    try:
        f = fuse({"scene": x}, clip_ids, cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f.fused.shape == (n, 12) and f.fused.dtype == np.float32
    assert peak < 4 * x.nbytes, f"fusion held {peak / x.nbytes:.1f}x its float32 input beside it"


@pytest.mark.parametrize("sparse", [False, True])
def test_normalised_in_blocks_matches_a_float64_reference(monkeypatch: pytest.MonkeyPatch, sparse: bool):
    # Blocks of 1,024 rows (the least), so 5,000 rows span five of them and every boundary is crossed.
    monkeypatch.setattr(fusion, "_BLOCK_VALUES", 1)
    x, clip_ids, rng = corpus(n=5000, n_clips=40, d=48)
    rows = rng.random(len(x)) > 0.3 if sparse else np.ones(len(x), bool)
    style = clip_style(fusion.finite32(x), clip_ids, rows)
    t = fit_modality(x, 12, rows=rows, clip_normalised=True, style=style)
    out = t(x, clip_ids, rows, style=style)
    # The same in float64, the normalised rows made whole (the definition: a loop over clips).
    xn = loop_normalise_within_clips(x, clip_ids, rows)
    fit = xn[rows]
    mean, sd = fit.mean(axis=0), fit.std(axis=0)
    np.testing.assert_allclose(t.mean, mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(t.scale, sd, rtol=1e-5)
    z = (fit - mean) / sd
    _, _, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    ref = ((xn - mean) / sd) @ vt[:12].T
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    ref[~rows] = 0.0
    signs = np.sign((out * ref).sum(axis=0))  # a principal direction may come out with either sign
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref * signs, atol=1e-5)


def test_descriptors_read_one_column_at_a_time_equal_the_whole_table_and_cluster_the_same(tmp_path):
    store = OutputStore(tmp_path)
    clips, seg = write_run(store, n_segments=900, n_clips=30)
    tbl = clips_table(store, clips)
    compact_outputs(store, min_files=1)
    # One clip processed again after compaction: its own file wins over its rows in the part.
    again = clips[4].clip_id
    store.write_table(f"segments/{again}.parquet", seg.filter(pc.equal(seg.column("clip_id"), again)))
    names = ("scene", "motion", "ego", "rhythm")
    columns = {m: modalities.get(m).column for m in names}
    whole = ok_segments(store, tbl)
    light = ok_segments(store, tbl, columns=[c for c in schema.SEGMENTS.names if c not in columns.values()])
    assert not set(columns.values()) & set(light.column_names)
    lazy = SegmentDescriptors(store, light, columns)
    vectors, _ = modalities.fusion_inputs(whole, names)
    for m in names:
        got = lazy[m]
        assert got.dtype == np.float32 and np.array_equal(got, np.nan_to_num(vectors[m])), m
    clip_ids = np.asarray(light.column("clip_id").to_pylist(), dtype=object)
    cfg = ClusterConfig(modalities=names)
    assert np.array_equal(fuse(lazy, clip_ids, cfg).fused, fuse(vectors, clip_ids, cfg).fused)


def test_a_segment_in_two_parts_is_named_not_placed_twice(tmp_path):
    store = OutputStore(tmp_path)
    clips, seg = write_run(store, n_segments=120, n_clips=4)
    tbl = clips_table(store, clips)
    compact_outputs(store, min_files=1)
    # A clip's rows in a second part that the parts index does not know (a copy left behind by hand).
    cid = clips[1].clip_id
    store.write_table("segments/part-copy.parquet", seg.filter(pc.equal(seg.column("clip_id"), cid)))
    light = ok_segments(store, tbl, columns=["segment_id"])
    with pytest.raises(ValueError, match=f"clip {cid} twice"):
        SegmentDescriptors(store, light, {"scene": "desc_scene"})
