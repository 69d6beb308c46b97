"""Sample footage v2: two trades, varied bouts, low-frame-rate sources, strong per-clip style."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from handclust import schema
from handclust.io.video import open_video, probe
from handclust.synthetic.footage_v1 import GROUND_TRUTH_FILE
from handclust.synthetic.footage_v2 import SHARED_ACTIVITIES, TRADE_ACTIVITIES, make_sample_footage_v2
from handclust.synthetic.sample import make_sample_footage

MINUTES = 1.0
FPS = 10.0
SIZE = (320, 180)
SEED = 7


@pytest.fixture(scope="module")
def v2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("footage_v2")
    return make_sample_footage(out, n_clips=4, minutes=MINUTES, seed=SEED, fps=FPS, size=SIZE, version=2)


@pytest.fixture(scope="module")
def truth(v2_dir: Path) -> dict[str, dict]:
    return json.loads((v2_dir / "truth.json").read_text())


def test_names_carry_phase_and_trade_and_truth_records_source_fps(truth: dict[str, dict]):
    assert sorted(truth) == ["01_production_masonry.mp4", "02_prep_masonry.mp4",
                             "03_production_framing.mp4", "04_transit_framing.mp4"]
    for name, rec in truth.items():
        _, phase, trade = Path(name).stem.split("_")
        assert (rec["phase"], rec["trade"]) == (phase, trade)
        assert rec["fps"] == pytest.approx(rec["source_fps"] * rec["hold"])
    assert truth["03_production_framing.mp4"]["source_fps"] == 0.5  # a timelapse helmet cam
    assert (truth["02_prep_masonry.mp4"]["source_fps"], truth["02_prep_masonry.mp4"]["fps"]) == (1.0, 30.0)


def test_files_decode_at_their_planned_rate_and_length(v2_dir: Path, truth: dict[str, dict]):
    gt = pq.read_table(v2_dir / GROUND_TRUTH_FILE)
    assert gt.schema.equals(schema.GROUND_TRUTH)
    rows = gt.to_pandas().groupby("file")
    for name, rec in truth.items():
        info = probe(v2_dir / name)
        assert info.source_fps == pytest.approx(rec["fps"], rel=1e-3), name
        assert info.duration_s == pytest.approx(MINUTES * 60, abs=1 / rec["fps"] + 1e-3), name
        assert (info.width, info.height) == SIZE
        g = rows.get_group(name)
        assert len(g) == round(MINUTES * 60 * rec["fps"])  # one truth row per frame of the file
        np.testing.assert_allclose(g.t.to_numpy(), np.arange(len(g)) / rec["fps"])
        assert set(g.trade) == {rec["trade"]}
        # The decoder sees as many frames as the truth has rows, at the file's own timestamps.
        n_decoded = sum(len(c.t) for c in open_video(v2_dir / name, sample_fps=rec["fps"], width=64, backend="pyav").chunks())
        assert n_decoded == len(g), name


def test_held_clip_repeats_each_source_frame(v2_dir: Path, truth: dict[str, dict]):
    name = "02_prep_masonry.mp4"
    hold = truth[name]["hold"]
    frames = np.concatenate([c.frames for c in open_video(v2_dir / name, sample_fps=30.0, width=64, backend="pyav").chunks()])
    step = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    new_source_frame = (np.arange(1, len(frames)) % hold) == 0
    # Held copies are identical but for the encoder refining the first copies; a new source frame moves.
    assert np.median(step[~new_source_frame]) < 0.1
    assert step[~new_source_frame].max() < np.median(step[new_source_frame]) / 3
    assert np.median(step[new_source_frame]) > 3.0
    gt = pq.read_table(v2_dir / GROUND_TRUTH_FILE).to_pandas().query("file == @name").activity.to_numpy()
    assert all(len(set(gt[i : i + hold])) == 1 for i in range(0, len(gt), hold))  # a held frame keeps its truth


def test_trades_share_walking_and_idle_and_keep_their_own_work(v2_dir: Path):
    gt = pq.read_table(v2_dir / GROUND_TRUTH_FILE).to_pandas()
    seen = {trade: set(g.activity) for trade, g in gt.groupby("trade")}
    assert set(seen) == set(TRADE_ACTIVITIES)
    for trade, acts in seen.items():
        assert set(SHARED_ACTIVITIES) <= acts
        others = {a for t, pair in TRADE_ACTIVITIES.items() if t != trade for a in pair}
        assert acts <= set(SHARED_ACTIVITIES) | set(TRADE_ACTIVITIES[trade])
        assert not acts & others
        assert acts & set(TRADE_ACTIVITIES[trade])


def test_several_bouts_of_varied_length_per_clip(truth: dict[str, dict]):
    lengths = []
    for name, rec in truth.items():
        bouts = rec["bouts"]
        assert len(bouts) >= 3, name
        assert all(a["activity"] != b["activity"] for a, b in itertools.pairwise(bouts))
        d = np.array([b["t_end"] - b["t_start"] for b in bouts])
        assert d[:-1].min() >= max(4.0, 4 / rec["source_fps"]) - 1e-9, name  # every bout spans >= 4 source frames
        lengths += d.tolist()
    assert max(lengths) / min(lengths) > 2.5
    assert np.std(lengths) / np.mean(lengths) > 0.3


def test_clip_style_outweighs_activity_in_mean_colour(v2_dir: Path):
    """Per-clip appearance must not find the activities: the mean colour of one activity differs
    more between clips than the mean colours of different activities within one clip."""
    gt = pq.read_table(v2_dir / GROUND_TRUTH_FILE).to_pandas()
    colours: dict[tuple[str, str], list[np.ndarray]] = {}
    for name, g in gt.groupby("file"):
        t, act = g.t.to_numpy(), g.activity.to_numpy()
        for chunk in open_video(v2_dir / name, sample_fps=2.0, width=80, backend="pyav").chunks():
            k = np.clip(np.searchsorted(t, chunk.t + 1e-6, side="right") - 1, 0, len(t) - 1)
            for frame, a in zip(chunk.frames, act[k], strict=True):
                colours.setdefault((name, a), []).append(frame.reshape(-1, 3).mean(axis=0))
    mean = {key: np.mean(v, axis=0) for key, v in colours.items()}
    keys = list(mean)
    pairs = list(itertools.combinations(keys, 2))
    within_clip = [np.linalg.norm(mean[a] - mean[b]) for a, b in pairs if a[0] == b[0]]
    same_activity = [np.linalg.norm(mean[a] - mean[b]) for a, b in pairs if a[0] != b[0] and a[1] == b[1]]
    assert same_activity and within_clip
    assert np.mean(same_activity) > 1.5 * np.mean(within_clip)
    nearest = [min((k for k in keys if k != a), key=lambda k: np.linalg.norm(mean[a] - mean[k])) for a in keys]
    assert sum(n[0] == a[0] for a, n in zip(keys, nearest, strict=True)) >= 2 * len(keys) / 3  # neighbours share the clip


def test_same_seed_same_truth_and_rerun_keeps_clips(v2_dir: Path, truth: dict[str, dict], tmp_path: Path):
    mtimes = {p.name: p.stat().st_mtime_ns for p in v2_dir.glob("*.mp4")}
    make_sample_footage_v2(v2_dir, n_clips=4, minutes=MINUTES, seed=SEED, fps=FPS, size=SIZE)
    assert {p.name: p.stat().st_mtime_ns for p in v2_dir.glob("*.mp4")} == mtimes  # resumed, nothing redrawn
    # The truth does not depend on the frame size: a tiny render of the same seed plans the same bouts.
    again = json.loads((make_sample_footage_v2(tmp_path / "a", n_clips=4, minutes=MINUTES, seed=SEED, fps=FPS,
                                                size=(64, 36)) / "truth.json").read_text())
    assert {n: r["bouts"] for n, r in again.items()} == {n: r["bouts"] for n, r in truth.items()}
    other = json.loads((make_sample_footage_v2(tmp_path / "b", n_clips=1, minutes=MINUTES, seed=SEED + 1, fps=FPS,
                                                size=(64, 36)) / "truth.json").read_text())
    assert other["01_production_masonry.mp4"]["bouts"] != truth["01_production_masonry.mp4"]["bouts"]


def test_more_clips_repeat_the_pattern_and_fewer_drop_the_rest(tmp_path: Path):
    from handclust.synthetic.footage_v2 import clip_specs

    names = [n for n, _ in clip_specs(8)]
    assert names[4:] == ["05_production_masonry.mp4", "06_prep_masonry.mp4", "07_production_framing.mp4",
                         "08_transit_framing.mp4"]
    out = make_sample_footage_v2(tmp_path, n_clips=2, minutes=0.5, seed=1, fps=5, size=(64, 36))
    make_sample_footage_v2(out, n_clips=1, minutes=0.5, seed=1, fps=5, size=(64, 36))
    assert sorted(p.name for p in out.glob("*.mp4")) == ["01_production_masonry.mp4"]
    assert set(pq.read_table(out / GROUND_TRUTH_FILE).column("file").to_pylist()) == {"01_production_masonry.mp4"}


@pytest.mark.slow
def test_cli_renders_v2_by_default_and_v1_on_request(tmp_path: Path):
    from click.testing import CliRunner

    from handclust.cli import cli

    tiny = ["--minutes", "0.5", "--fps", "5", "--size", "64x36"]
    r = CliRunner().invoke(cli, ["sample-footage", str(tmp_path / "v2"), *tiny])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "v2" / "truth.json").read_text())
    assert {x["trade"] for x in rec.values()} == set(TRADE_ACTIVITIES)
    assert min(x["source_fps"] for x in rec.values()) <= 1.0
    r = CliRunner().invoke(cli, ["sample-footage", str(tmp_path / "v1"), "--version", "1", "--clips", "1", *tiny])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "v1").glob("*.mp4")) == ["01_production_masonry.mp4"]
    r = CliRunner().invoke(cli, ["sample-footage", str(tmp_path / "short"), "--minutes", "0.2"])
    assert r.exit_code == 2 and "too short" in r.output and not (tmp_path / "short").exists()


# ----------------------------------------------------------------------------- discovery on v2
# The tests' bar for discovery comes from v2 (issue 9). Measured on this footage (seed 7, 4 clips of
# 1 min): frame ARI 0.35 and 0.28 on two renders (libx264 at 320x180 varies a few pixels between
# runs), against 0.25 for "one activity per clip". The comparison with that baseline is made on
# deterministic 640x360 renders in benchmarks/results/discovery.json (fused ahead on 3 of 3 sets).
V2_ARI_BAR = 0.2
RUN = ["runner=local", "report.enabled=false", "labels.enabled=false", "evaluation.ablations=false", "scene.encoder=histogram"]


def _runs_s(segments, clusters) -> list[float]:
    """Lengths (s) of the timeline's activity runs, per clip."""
    seg = segments.select(["clip_id", "t_start", "t_end"]).to_pandas()
    seg["activity"] = clusters.column("activity").to_numpy()
    runs = []
    for _, g in seg.groupby("clip_id", sort=False):
        change = np.r_[True, g.activity.to_numpy()[1:] != g.activity.to_numpy()[:-1]]
        run_id = np.cumsum(change)
        runs += (g.t_end - g.t_start).groupby(run_id).sum().tolist()
    return runs


def _true_runs_s(truth: dict[str, dict]) -> list[float]:
    runs = []
    for rec in truth.values():
        for _, bouts in itertools.groupby(rec["bouts"], key=lambda b: b["activity"]):
            bouts = list(bouts)
            runs.append(bouts[-1]["t_end"] - bouts[0]["t_start"])
    return runs


@pytest.fixture(scope="module")
def v2_run(v2_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from handclust import discover

    return discover(v2_dir, out=tmp_path_factory.mktemp("run_v2"), progress=False, overrides=RUN)


def test_v2_activities_beat_one_activity_per_clip(v2_run, v2_dir: Path):
    from handclust.core.metrics import agreement
    from handclust.reporting.evaluation import frame_sequences, load_truth

    ev = v2_run.evaluation
    gt, _, clip = frame_sequences(v2_run.segments, v2_run.clips, load_truth(v2_dir), 5.0)
    per_clip = agreement(gt.astype(str), clip.astype(str))["ari"]  # each clip its own activity: phase and trade alone
    assert ev["ground_truth"]["ari"] >= V2_ARI_BAR, (ev["ground_truth"], per_clip)
    assert set(v2_run.clips.column("status").to_pylist()) == {"ok"}  # the 0.5 fps and held clips are whole
    run = json.loads((Path(v2_run.out) / "run.json").read_text())
    scores = run["clustering"]["modality_scores"]
    assert any(s["clip_normalised"] for s in scores.values())  # four clips, four looks
    assert all(s["why"] for s in scores.values())


@pytest.mark.slow
def test_two_trades_at_half_a_frame_per_second_separate_and_timelines_do_not_flicker(tmp_path: Path):
    """The held-back helmet set in small: two long clips of two trades, one image every 2 s. Its
    activities must separate the trades (NMI >= 0.3, the issue's goal), and the timeline must not
    change activity more often than the work does (median run at least the true median)."""
    from handclust import discover
    from handclust.core.metrics import agreement
    from handclust.synthetic.footage_v2 import ClipSpec

    pattern = (ClipSpec("production", "masonry", source_fps=0.5), ClipSpec("production", "framing", source_fps=0.5))
    footage = make_sample_footage_v2(tmp_path / "footage", n_clips=2, minutes=5.0, seed=SEED, size=SIZE, pattern=pattern)
    r = discover(footage, out=tmp_path / "run", progress=False, overrides=RUN)
    assert set(r.clips.column("status").to_pylist()) == {"ok"}
    paths = dict(zip(r.clips.column("clip_id").to_pylist(), r.clips.column("path").to_pylist(), strict=True))
    trade = ["masonry" if "masonry" in Path(paths[c]).name else "framing" for c in r.clusters.column("clip_id").to_pylist()]
    activity = r.clusters.column("activity").to_numpy()
    assert agreement(np.asarray(trade), activity)["nmi"] >= 0.3
    truth = json.loads((footage / "truth.json").read_text())
    assert np.median(_runs_s(r.segments, r.clusters)) >= np.median(_true_runs_s(truth))
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    unmeasured = run["clustering"]["unmeasured"]
    assert {Path(c["path"]).name for c in unmeasured["low_rate_clips"]} == {"01_production_masonry.mp4", "02_production_framing.mp4"}
    assert unmeasured["segments"]["rhythm"] == r.segments.num_rows  # a 2 s hold is not a rhythm


@pytest.mark.slow
@pytest.mark.parametrize("version", [1, 2])
def test_same_seed_gives_the_same_bytes_every_call(tmp_path: Path, version: int):
    """Sample footage is a fixture for users and tests: one seed is one set of files, whatever the
    process encoded before and however many cores it has (x264 lookahead and threads broke this)."""
    def render(name: str) -> list[bytes]:
        out = make_sample_footage(tmp_path / name, n_clips=2, minutes=0.25, seed=5, fps=10.0, size=(320, 180),
                                  version=version)
        return [p.read_bytes() for p in sorted(out.glob("*.mp4"))]

    first = render("a")
    assert all(render(n) == first for n in ("b", "c"))
