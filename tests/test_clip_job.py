"""The clip job both runners share (handclust/runtime/clip_job.py): its error policy, the decode thread
that does not change a row, and per-clip commits that survive a run killed part-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from handclust.config import RunConfig, load_config
from handclust.io.footage import find_clips
from handclust.io.storage import OutputStore
from handclust.modalities.encoders import ModelLoadError
from handclust.pipeline import LocalRunner
from handclust.progress import Progress
from handclust.stages import Batch, Resources

pytestmark = pytest.mark.slow  # renders footage and runs the pipeline


class Broken:
    """A frame stage that fails on every batch with ``exc``."""

    name = "broken"
    resources = Resources(num_cpus=0.1)

    def __init__(self, exc: Exception):
        self.exc = exc

    def setup(self) -> None:
        pass

    def __call__(self, batch: Batch) -> Batch:
        raise self.exc


def local_runner(out: Path, *overrides: str) -> LocalRunner:
    return LocalRunner(load_config(None, ["progress=false", "pose.enabled=false", *overrides]), OutputStore(out), Progress(False))


def test_a_clip_that_breaks_a_stage_is_its_own_one_line_error(short_clip: Path, tmp_path: Path):
    """Not only VideoError: anything one clip raises becomes that clip's error, naming the file and the fix."""
    clip = find_clips([short_clip], RunConfig().phase.pattern)[0]
    runner = local_runner(tmp_path / "out")
    runner.stages.append(Broken(ValueError("operands could not be broadcast\nsecond line")))
    st = runner.process_clip(clip)
    assert st["status"] == "error" and st["failures"] == 1
    assert "\n" not in st["error"] and str(short_clip) in st["error"], st["error"]
    assert "computing frame features failed (ValueError: operands could not be broadcast)" in st["error"] and "re-encode it" in st["error"]
    on_disk = OutputStore(tmp_path / "out").read_json(f"status/{clip.clip_id}.json")
    assert on_disk["error"] == st["error"] and not runner.is_done(clip)
    assert not (tmp_path / "out" / "frames").exists()  # nothing of the clip half-written


def test_an_error_every_clip_would_hit_stops_the_run(short_clip: Path, tmp_path: Path):
    """A model that cannot load is the run's error, not the clip's: it propagates instead of failing clip after clip."""
    clip = find_clips([short_clip], RunConfig().phase.pattern)[0]
    runner = local_runner(tmp_path / "out")
    runner.stages.append(Broken(ModelLoadError("scene.model: /models/x is not a directory")))
    with pytest.raises(ModelLoadError, match="scene.model"):
        runner.process_clip(clip)


def test_the_decode_thread_changes_no_row(short_clip: Path, tmp_path: Path):
    """decode.prefetch_chunks overlaps decoding with the features; the tables, status and resume fingerprint are the same."""
    clip = find_clips([short_clip], RunConfig().phase.pattern)[0]
    a = local_runner(tmp_path / "a", "decode.prefetch_chunks=0", "decode.chunk_frames=8")
    b = local_runner(tmp_path / "b", "decode.prefetch_chunks=3", "decode.chunk_frames=8")
    sa, sb = a.process_clip(clip), b.process_clip(clip)
    assert sa["status"] == sb["status"] == "ok" and sa["n_frames"] == sb["n_frames"] > 50
    assert a.fingerprint == b.fingerprint  # a rerun with another prefetch depth resumes
    fa, fb = pd.read_parquet(tmp_path / "a" / "frames"), pd.read_parquet(tmp_path / "b" / "frames")
    for col in fa.columns:
        x, y = fa[col].to_numpy(), fb[col].to_numpy()
        if x.dtype == object and isinstance(x[0], np.ndarray):
            np.testing.assert_array_equal(np.stack(x), np.stack(y), err_msg=col)
        else:
            assert (pd.Series(x).equals(pd.Series(y))), col


def test_local_run_killed_part_way_keeps_each_finished_clip(tmp_path: Path):
    """`handclust run --set runner=local` killed after its first commit: every clip committed before
    the kill is kept (tables and status), commits happen while later clips have not started, and the
    rerun does only the rest."""
    from handclust.synthetic.footage_v1 import render_clip

    footage = tmp_path / "footage"
    footage.mkdir()
    for i, phase in enumerate(("production", "prep", "transit", "downtime")):
        render_clip(footage / f"{i + 1:02d}_{phase}.mp4", phase, 8.0, seed=30 + i, fps=10.0, size=(320, 180))
    clips = find_clips(footage, RunConfig().phase.pattern)
    out = tmp_path / "out"
    cmd = [str(Path(sys.executable).with_name("handclust")), "run", str(footage), "--out", str(out), "--no-progress",
           "--set", "runner=local", "--set", "pose.enabled=false"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

    def statuses() -> dict[str, dict]:
        found = {}
        for c in clips:
            f = out / "status" / f"{c.clip_id}.json"
            if f.exists():
                found[c.clip_id] = json.loads(f.read_text())
        return found

    p = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and p.poll() is None and sum(s["status"] == "ok" for s in statuses().values()) < 2:
            time.sleep(0.05)
        still_running = p.poll() is None
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # the driver only: its own process group
        p.wait()
    kept = statuses()
    done = {cid: s for cid, s in kept.items() if s["status"] == "ok"}
    assert still_running and 2 <= len(done) < len(clips), {k: s["status"] for k, s in kept.items()}
    for cid in done:
        assert len(pd.read_parquet(out / "frames" / f"{cid}.parquet")) > 0
        assert len(pd.read_parquet(out / "segments" / f"{cid}.parquet")) > 0
    # Commits spread over the run: the first clip was committed before the second one started.
    first = min(done.values(), key=lambda s: s["committed_at"])
    assert any(s["started_at"] > first["committed_at"] for s in kept.values()), kept
    # A SIGKILL between writing a file and renaming it into place leaves a hidden half-written file
    # that no reader sees; the next command that takes the output's lock removes it.
    assert all(p.name.startswith(".") for p in out.rglob("*.tmp"))
    from handclust.io.run_lock import hold

    with hold(OutputStore(out), "run"):
        pass
    assert not list(out.rglob("*.tmp"))
    runner = local_runner(out)
    todo = [c for c in clips if not runner.is_done(c)]
    assert sorted(c.clip_id for c in todo) == sorted(c.clip_id for c in clips if c.clip_id not in done)
    assert all(runner.process_clip(c)["status"] == "ok" for c in todo)
    for cid in done:
        assert OutputStore(out).read_json(f"status/{cid}.json")["attempts"] == 1  # committed: never redone
