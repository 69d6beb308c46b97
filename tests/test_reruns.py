"""Reruns into the same output folder never give a wrong answer in silence (issue 21): a clip
replaced by another of the same size is processed again, a removed clip's rows leave every table,
the run's own outputs are never read as footage, and evaluate/report/summary keep good outputs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from handclust.config import RunConfig
from handclust.io.footage import find_clips

PATTERN = RunConfig().phase.pattern


def test_a_clip_replaced_by_one_of_the_same_size_gets_a_new_id(tmp_path: Path):
    """Path and size alone kept the old clip's id; the sampled content and the modification time change it."""
    p = tmp_path / "01_production.mp4"
    data = os.urandom(200_000)
    p.write_bytes(data)
    os.utime(p, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    first = find_clips([p], PATTERN)[0]
    assert find_clips([p], PATTERN)[0].clip_id == first.clip_id  # stable: resume keeps it

    p.write_bytes(data[:100_000] + bytes(1000) + data[101_000:])  # same size, other bytes in the middle
    os.utime(p, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))  # even with the old time
    assert find_clips([p], PATTERN)[0].clip_id != first.clip_id

    p.write_bytes(data)
    os.utime(p, ns=(1_700_000_001_000_000_000, 1_700_000_001_000_000_000))  # same bytes, written again later
    assert find_clips([p], PATTERN)[0].clip_id != first.clip_id

    copy = tmp_path / "copy"
    copy.mkdir()
    os.utime(p, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    shutil.copy2(p, copy / p.name)  # a copy that keeps the time (cp -p, rsync -a) is the same file elsewhere
    assert find_clips([copy / p.name], PATTERN)[0].fingerprint == first.fingerprint


def _ids(folder: Path, suffix: str = ".parquet") -> set[str]:
    return {q.name[: -len(suffix)] for q in folder.glob(f"*{suffix}")} if folder.exists() else set()


def _render(path: Path, seed: int, phase: str, seconds: float = 6.0) -> None:
    from handclust.synthetic.footage_v1 import render_clip

    render_clip(path, phase, seconds, seed=seed, fps=10.0, size=(96, 64))


def pad(path: Path, size: int) -> None:
    data = path.read_bytes()
    assert len(data) < size
    path.write_bytes(data + bytes(size - len(data)))


@pytest.mark.slow
def test_replaced_and_removed_clips_leave_the_run(tmp_path: Path):
    """After a clip is replaced (same name, same size) and another removed, the rerun processes the
    replacement, and every per-clip table and glob holds exactly the clips of clusters.parquet."""
    from handclust import discover

    footage, out = tmp_path / "footage", tmp_path / "out"
    footage.mkdir()
    for i, phase in enumerate(["production", "prep", "transit"]):
        _render(footage / f"{i:02d}_{phase}.mp4", seed=i, phase=phase)
    size = 200_000  # 00 and its replacement padded to one size (decoders ignore bytes after the MP4)
    pad(footage / "00_production.mp4", size)
    args = {"progress": False, "overrides": ["runner=local", "report.enabled=false", "labels.enabled=false"]}
    discover(footage, out=out, **args)
    before = pd.read_parquet(out / "clusters.parquet")

    _render(footage / "00_production.mp4", seed=11, phase="production", seconds=3.0)  # replaced: same name ...
    pad(footage / "00_production.mp4", size)  # ... and same size
    shutil.move(footage / "02_transit.mp4", tmp_path / "02_transit.mp4")  # keeps its modification time

    result = discover(footage, out=out, **args)
    clips = pd.read_parquet(out / "clips.parquet")
    assert len(clips) == 2 and (clips.status == "ok").all(), clips[["path", "status", "error"]]
    replaced = clips[clips.path.str.endswith("00_production.mp4")].iloc[0]
    assert replaced.clip_id not in set(before.clip_id)  # processed again, not the old clip's rows
    assert replaced.duration_s == pytest.approx(3.0, abs=0.3)
    clusters = pd.read_parquet(out / "clusters.parquet")
    assert set(clusters.clip_id) == set(clips.clip_id) == set(result.clusters.column("clip_id").to_pylist())
    # The README's reads: every per-clip table says the same as clusters.parquet.
    assert set(pd.read_parquet(out / "segments").clip_id) == set(clusters.clip_id)
    assert set(pd.read_parquet(out / "segments").segment_id) == set(clusters.segment_id)
    assert set(pd.read_parquet(out / "frames").clip_id) == set(clusters.clip_id)
    for folder, suffix in (("segments", ".parquet"), ("frames", ".parquet"), ("status", ".json"), ("timelines", ".json")):
        assert _ids(out / folder, suffix) == set(clips.clip_id), folder
    assert len(_ids(out / ".removed" / "segments")) == 2  # the old 00 and 02, set aside rather than lost

    # 02 comes back unchanged: its results come back too, without decoding it again.
    shutil.move(tmp_path / "02_transit.mp4", footage / "02_transit.mp4")
    discover(footage, out=out, **args)
    clips = pd.read_parquet(out / "clips.parquet")
    back = clips[clips.path.str.endswith("02_transit.mp4")].iloc[0]
    assert back.clip_id in set(before.clip_id) and back.status == "ok" and back.attempts == 1
    assert set(pd.read_parquet(out / "clusters.parquet").clip_id) == set(clips.clip_id) == _ids(out / "segments")


@pytest.mark.slow
def test_a_removed_clip_leaves_a_compacted_run_and_comes_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """With segments/ and frames/ compacted into parts (as a large run leaves them; the threshold lowered
    here), a removed clip's rows leave the folder globs and come back, undecoded, when the clip does."""
    from handclust import discover, pipeline

    monkeypatch.setattr(pipeline, "COMPACT_FROM", 1)
    footage, out = tmp_path / "footage", tmp_path / "out"
    footage.mkdir()
    for i, phase in enumerate(["production", "prep", "transit"]):
        _render(footage / f"{i:02d}_{phase}.mp4", seed=i, phase=phase)
    args = {"progress": False, "overrides": ["runner=local", "report.enabled=false", "labels.enabled=false",
                                             "evaluation.ablations=false"]}
    discover(footage, out=out, **args)
    assert not _ids(out / "segments") - {p.stem for p in (out / "segments").glob("part-*.parquet")}  # compacted
    before = pd.read_parquet(out / "segments")

    shutil.move(footage / "02_transit.mp4", tmp_path / "02_transit.mp4")
    discover(footage, out=out, **args)
    clips = pd.read_parquet(out / "clips.parquet")
    assert len(clips) == 2
    for folder in ("segments", "frames"):
        assert set(pd.read_parquet(out / folder).clip_id) == set(clips.clip_id), folder
    assert set(pd.read_parquet(out / "clusters.parquet").clip_id) == set(clips.clip_id)
    gone = (set(before.clip_id) - set(clips.clip_id)).pop()
    assert (out / ".removed" / "segments" / f"{gone}.parquet").exists()

    shutil.move(tmp_path / "02_transit.mp4", footage / "02_transit.mp4")
    discover(footage, out=out, **args)
    clips = pd.read_parquet(out / "clips.parquet")
    back = clips[clips.clip_id == gone].iloc[0]
    assert back.status == "ok" and back.attempts == 1  # restored, not decoded again
    assert sorted(pd.read_parquet(out / "segments").segment_id) == sorted(before.segment_id)
    assert set(pd.read_parquet(out / "clusters.parquet").clip_id) == set(before.clip_id)


def test_output_folders_inside_the_footage_are_not_footage(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """A run's reel (and a lock-held folder being written) under the footage folder is skipped, and said so."""
    from handclust.io.footage import FootageError

    footage = tmp_path / "footage"
    (footage / "day1").mkdir(parents=True)
    (footage / "day1" / "01_production.mp4").write_bytes(b"x" * 100)
    run = footage / "runs" / "a"
    (run / "report").mkdir(parents=True)
    for name in ("run.json", "clips.parquet"):
        (run / name).write_bytes(b"{}")
    (run / "report" / "reel.mp4").write_bytes(b"x" * 100)
    busy = footage / "runs" / "b"
    (busy / "report").mkdir(parents=True)
    (busy / ".handclust-lock.json").write_text("{}")
    (busy / "report" / "reel.mp4").write_bytes(b"x" * 100)
    this = footage / "out"  # this run's --out, before it has written anything
    (this / "report").mkdir(parents=True)
    (this / "report" / "reel.mp4").write_bytes(b"x" * 100)

    clips = find_clips(footage, PATTERN, skip=[str(this)])
    assert [Path(c.path).name for c in clips] == ["01_production.mp4"]
    assert "skipped 3 video file(s)" in caplog.text and str(run.resolve()) in caplog.text
    with pytest.raises(FootageError, match="is a HandClust output folder"):
        find_clips(run, PATTERN)


@pytest.mark.slow
def test_out_inside_the_footage_folder_gives_the_same_result_every_run(tmp_path: Path):
    """The issue's case: `--out` inside the footage; the second run read its own report/reel.mp4 as a clip."""
    from handclust import discover

    footage = tmp_path / "footage"
    footage.mkdir()
    for i, phase in enumerate(["production", "prep"]):
        _render(footage / f"{i:02d}_{phase}.mp4", seed=i, phase=phase)
    out = footage / "out"
    args = {"progress": False, "overrides": ["runner=local", "labels.enabled=false"]}
    first = discover(footage, out=out, **args)
    if not (out / "report" / "reel.mp4").exists():  # two short clips may give no activity, so no reel: stand one in
        shutil.copy(footage / "00_production.mp4", out / "report" / "reel.mp4")
    second = discover(footage, out=out, **args)
    assert first.summary["clips_total"] == second.summary["clips_total"] == 2
    assert pd.read_parquet(out / "clips.parquet").path.str.contains("/out/").sum() == 0
    assert first.clusters.equals(second.clusters)


# --------------------------------------------------------------------------- good outputs kept, one-line errors


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(footage, out): 3 clips of 6 s, the whole pipeline with its report."""
    from handclust import discover

    footage = tmp_path_factory.mktemp("tiny_footage")
    for i, phase in enumerate(["production", "prep", "transit"]):
        _render(footage / f"{i:02d}_{phase}.mp4", seed=i, phase=phase)
    out = tmp_path_factory.mktemp("tiny_run")
    discover(footage, out=out, progress=False, overrides=["runner=local", "labels.enabled=false", "cluster.map_method=pca"])
    return footage, out


def _cli(*args: str):
    from click.testing import CliRunner

    from handclust.cli import cli

    r = CliRunner().invoke(cli, list(args))
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)  # no traceback
    return r


def _one_error_line(r) -> str:
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


@pytest.mark.slow
def test_evaluate_and_report_keep_good_outputs_when_segments_are_missing(tiny_run, tmp_path: Path):
    """evaluate wrote an empty eval.json (0 segments, k=0) over a good one and exited 0; the report an empty page."""
    out = tmp_path / "run"
    shutil.copytree(tiny_run[1], out)
    kept = {name: (out / name).read_bytes() for name in ("eval.json", "ablations.parquet", "report/index.html")}
    shutil.rmtree(out / "segments")
    for cmd in (["evaluate", str(out)], ["report", str(out), "--no-reel"]):
        r = _cli(*cmd)
        assert r.exit_code == 2, r.output
        line = _one_error_line(r)
        assert "segments in clusters.parquet are missing" in line and "left as it was" in line, line
    assert {name: (out / name).read_bytes() for name in kept} == kept


@pytest.mark.slow
def test_a_truncated_run_json_is_one_line_everywhere(tiny_run, tmp_path: Path):
    footage, good = tiny_run
    out = tmp_path / "run"
    shutil.copytree(good, out)
    text = (out / "run.json").read_text()
    (out / "run.json").write_text(text[: len(text) // 2])
    new_out = tmp_path / "assigned"
    for cmd in (["summary", str(out)], ["report", str(out), "--no-reel"], ["evaluate", str(out)],
                ["assign", str(out), str(footage), "--out", str(new_out), "--no-progress"]):
        r = _cli(*cmd)
        assert r.exit_code == 2, (cmd, r.output)
        line = _one_error_line(r)
        assert "run.json is not valid JSON" in line and "rerun `handclust run" in line, line
    assert not new_out.exists()  # a refused assign leaves no folder behind


@pytest.mark.slow
def test_a_refused_assign_leaves_no_empty_folder(tiny_run, tmp_path: Path):
    new_out = tmp_path / "assigned"
    r = _cli("assign", str(tiny_run[1]), str(tmp_path / "no_such_footage"), "--out", str(new_out), "--no-progress")
    assert r.exit_code == 2 and "does not exist" in _one_error_line(r)
    assert not new_out.exists()


@pytest.mark.slow
def test_a_run_where_every_clip_fails_says_so_and_records_failed(tmp_path: Path):
    footage, out = tmp_path / "footage", tmp_path / "out"
    footage.mkdir()
    for name in ("01_production.mp4", "02_prep.mp4"):
        (footage / name).write_bytes(b"\x00junk" * 100)
    r = _cli("run", str(footage), "--out", str(out), "--no-progress", "--set", "runner=local", "--set", "labels.enabled=false")
    assert r.exit_code == 1, r.output
    assert "no clip could be processed (2 failed of 2)" in _one_error_line(r)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "failed" and "no clip could be processed" in record["error"]


def test_a_clip_cut_before_its_index_gets_advice_that_can_work(tmp_path: Path):
    """Re-encoding a file without its MP4 index fails the same way: the advice is to copy it again or repair it."""
    from handclust.io.video import VideoError, open_video

    whole, cut = tmp_path / "whole.mp4", tmp_path / "01_production_cut.mp4"
    _render(whole, seed=1, phase="production", seconds=3.0)
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError) as err:
        open_video(str(cut), 5.0, 160, 16)
    msg = str(err.value)
    assert "\n" not in msg and str(cut) in msg and "'moov' box" in msg and "re-encoding cannot help" in msg, msg
    assert "ffmpeg -i" not in msg
