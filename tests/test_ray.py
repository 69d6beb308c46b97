"""The Ray runner on a real local Ray instance: same tables as the local runner, resume, quarantine,
and a worker killed mid-batch retried by Ray without changing the result."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import ray

from handclust.config import RunConfig, load_config
from handclust.io.footage import Clip, find_clips
from handclust.io.storage import OutputStore
from handclust.pipeline import LocalRunner, frame_stages
from handclust.progress import Progress
from handclust.stages import Batch, Resources

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_instance():
    # A short temp dir: Ray's socket paths must fit in 107 bytes.
    tmp = tempfile.mkdtemp(prefix="hcray")
    # Workers import this module too (the crashing test stage lives here).
    ray.init(num_cpus=2, object_store_memory=500 * 1024 * 1024, include_dashboard=False, log_to_driver=False,
             _temp_dir=tmp, runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parent)}})
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def ray_config(*overrides: str) -> RunConfig:
    # Three stage actors (scene, motion, pose) at 0.3 CPU each leave a CPU for decoding on this 2-CPU instance.
    return load_config(None, ["progress=false", "runner=ray", "ray.actor_num_cpus=0.3", *overrides])


def run_ray(cfg: RunConfig, clips: list[Clip], out: Path, stages: list[Any] | None = None) -> list[dict[str, Any]]:
    from handclust.runtime.ray_runner import RayRunner

    runner = RayRunner(cfg, OutputStore(out), Progress(False), stages=stages)
    return runner.process_clips([c for c in clips if not runner.is_done(c)])


def frames_of(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "frames").sort_values(["clip_id", "frame_idx"]).reset_index(drop=True)


def segments_of(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "segments").sort_values(["clip_id", "seg_idx"]).reset_index(drop=True)


def assert_same_tables(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for col in a.columns:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if x.dtype == object and len(x) and isinstance(x[0], np.ndarray) and x[0].dtype.kind in "fiub":
            np.testing.assert_allclose(np.stack(x), np.stack(y), rtol=1e-5, atol=1e-6, err_msg=col)
        elif x.dtype == object and len(x) and isinstance(x[0], np.ndarray):  # lists of names (unmeasured)
            assert [list(v) for v in x] == [list(v) for v in y], col
        elif np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=col)
        else:
            assert (x == y).all(), col


@pytest.fixture(scope="module")
def two_clips(footage_dir: Path) -> list[Clip]:
    return find_clips(sorted(footage_dir.glob("*.mp4"))[:2], RunConfig().phase.pattern)


@pytest.fixture(scope="module")
def ray_run(ray_instance, two_clips: list[Clip], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ray_out")
    statuses = run_ray(ray_config(), two_clips, out)
    assert [s["status"] for s in statuses] == ["ok", "ok"], statuses
    return out


def test_actor_pools_that_leave_no_cpu_to_decode_stop_with_the_fix(ray_instance, two_clips: list[Clip], tmp_path: Path):
    """Three actors at 0.5 CPU + a 1-CPU decode task > 2 CPUs: Ray would wait forever; the run says why instead."""
    from handclust.config import ConfigError

    with pytest.raises(ConfigError, match=r"2\.5 CPUs, more than the 2 this Ray cluster has.*ray\.actor_num_cpus"):
        run_ray(ray_config("ray.actor_num_cpus=0.5"), two_clips[:1], tmp_path / "out")


def test_ray_runner_matches_local_runner(ray_run: Path, two_clips: list[Clip], tmp_path: Path):
    cfg = ray_config()
    local = LocalRunner(cfg, OutputStore(tmp_path), Progress(False))
    for clip in two_clips:
        assert local.process_clip(clip)["status"] == "ok"
    assert_same_tables(frames_of(ray_run), frames_of(tmp_path))
    seg_ray, seg_local = segments_of(ray_run), segments_of(tmp_path)
    assert_same_tables(seg_ray, seg_local)
    assert set(seg_ray.segment_id) == set(seg_local.segment_id)
    # Status records agree too, so either runner resumes the other's run.
    for clip in two_clips:
        a = OutputStore(ray_run).read_json(f"status/{clip.clip_id}.json")
        b = OutputStore(tmp_path).read_json(f"status/{clip.clip_id}.json")
        keys = ("status", "n_frames", "n_segments", "duration_s", "fingerprint", "backend", "attempts")
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
        assert local.is_done(clip)


def test_resume_processes_only_unfinished_clips(ray_run: Path, two_clips: list[Clip], short_clip: Path, tmp_path: Path):
    out = tmp_path / "out"
    shutil.copytree(ray_run, out)
    a, b = two_clips
    (out / "segments" / f"{b.clip_id}.parquet").unlink()  # killed before its segments were written
    clips = [*two_clips, *find_clips([short_clip], RunConfig().phase.pattern)]  # plus one never started
    statuses = run_ray(ray_config(), clips, out)
    assert [s["clip_id"] for s in statuses] == [b.clip_id, clips[2].clip_id]  # only these were to do
    statuses = [OutputStore(out).read_json(f"status/{c.clip_id}.json") for c in clips]
    attempts = {s["clip_id"]: s["attempts"] for s in statuses}
    assert [s["status"] for s in statuses] == ["ok", "ok", "ok"]
    assert attempts[a.clip_id] == 1  # finished: not touched
    assert attempts[b.clip_id] == 2 and attempts[clips[2].clip_id] == 1
    frames = frames_of(out)
    assert not frames.duplicated(["clip_id", "frame_idx"]).any()
    assert set(frames.clip_id) == {c.clip_id for c in clips}
    assert not segments_of(out).segment_id.duplicated().any()
    assert not list(out.rglob("*.tmp"))
    # Rows of the resumed clip equal the first run's.
    before = frames_of(ray_run)
    assert_same_tables(frames[frames.clip_id == b.clip_id].reset_index(drop=True),
                       before[before.clip_id == b.clip_id].reset_index(drop=True))


def test_corrupt_clip_is_quarantined_after_max_attempts(ray_instance, short_clip: Path, tmp_path: Path):
    from handclust import discover

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(short_clip, src / short_clip.name)
    (src / "02_transit_corrupt.mp4").write_bytes(b"\x00\x01junk" * 1000)
    cfg = ray_config("ray.max_attempts=2", "labels.enabled=false", "cluster.map_method=pca")
    first = discover(src, out=tmp_path / "out", config=cfg, progress=False)
    status = dict(zip(first.clips.column("path").to_pylist(), first.clips.column("status").to_pylist(), strict=True))
    assert status[str(src / "02_transit_corrupt.mp4")] == "error" and status[str(src / short_clip.name)] == "ok"
    assert first.summary["quarantined"] == [] and first.summary["segments"] > 0
    second = discover(src, out=tmp_path / "out", config=cfg, progress=False)
    assert second.summary["quarantined"] == [str(src / "02_transit_corrupt.mp4")]
    row = second.clips.filter(pd.Series(second.clips.column("status").to_pylist()).eq("quarantined").to_numpy())
    assert row.num_rows == 1 and row.column("attempts")[0].as_py() == 2
    assert "02_transit_corrupt.mp4" in row.column("error")[0].as_py()
    # Quarantined clips are skipped: nothing is left to do, so no Ray pipeline runs at all.
    from handclust.runtime.ray_runner import RayRunner

    runner = RayRunner(cfg, OutputStore(tmp_path / "out"), Progress(False))
    assert all(runner.is_done(c) for c in find_clips(src, cfg.phase.pattern))
    third = discover(src, out=tmp_path / "out", config=cfg, progress=False)
    assert third.summary["quarantined"] == second.summary["quarantined"]
    assert OutputStore(tmp_path / "out").read_json(f"status/{row.column('clip_id')[0].as_py()}.json")["attempts"] == 2


class CrashOnce:
    """Pass-through stage whose worker process dies once, mid-run (a segfault, an OOM kill)."""

    name = "crash_once"
    resources = Resources(num_cpus=0.2, batch_size=16)

    def __init__(self, marker: str):
        self.marker = marker
        self.calls = 0

    def setup(self) -> None:
        pass

    def __call__(self, batch: Batch) -> Batch:
        self.calls += 1
        # On the second batch: the actor is up and working, as a real crash (not a failed load) finds it.
        if self.calls == 2 and not os.path.exists(self.marker):
            Path(self.marker).write_text("crashed")
            os._exit(1)
        return batch


def test_killed_worker_is_retried_with_same_result(ray_run: Path, two_clips: list[Clip], tmp_path: Path):
    marker = tmp_path / "crashed"
    cfg = ray_config("ray.actor_num_cpus=0.2", "ray.max_restarts=2", "ray.max_task_retries=2")
    scene, motion, pose = frame_stages(cfg)
    out = tmp_path / "out"
    statuses = run_ray(cfg, two_clips[:1], out, stages=[scene, CrashOnce(str(marker)), motion, pose])
    assert marker.exists()  # the worker did die
    assert statuses[0]["status"] == "ok" and statuses[0]["attempts"] == 1
    frames, segments = frames_of(ray_run), segments_of(ray_run)
    clip_id = two_clips[0].clip_id
    assert_same_tables(frames_of(out), frames[frames.clip_id == clip_id].reset_index(drop=True))
    assert_same_tables(segments_of(out), segments[segments.clip_id == clip_id].reset_index(drop=True))


def _descendants_running(task: str) -> list[int]:
    """Pids of this process's descendants (Ray workers of ray_instance) whose title names ``task``."""
    parent: dict[int, int] = {}
    titles: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                titles[int(d.name)] = (d / "cmdline").read_bytes().decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
    me, out = os.getpid(), []
    for pid, title in titles.items():
        p, seen = pid, 0
        while p > 1 and seen < 64:
            p, seen = parent.get(p, 0), seen + 1
            if p == me:
                if task in title:
                    out.append(pid)
                break
    return out


def test_clip_that_kills_its_decode_worker_every_time_is_quarantined(ray_instance, footage_dir: Path, tmp_path: Path):
    """Ray's default retries a task lost with its worker forever; here each clip gets bounded tries."""
    import json
    import signal
    import threading

    clips = find_clips(sorted(footage_dir.glob("*.mp4"))[:1], RunConfig().phase.pattern)
    stop, killed = threading.Event(), []

    status = tmp_path / "status" / f"{clips[0].clip_id}.json"

    seen: list[int] = []  # status file versions already answered with a kill

    def decoding() -> bool:  # killed while decoding (its attempt recorded), as a decoder crash does
        try:
            return json.loads(status.read_text())["status"] == "running" and status.stat().st_mtime_ns not in seen
        except (OSError, ValueError, KeyError):
            return False

    def killer() -> None:
        while not stop.is_set():
            if decoding():
                version = status.stat().st_mtime_ns
                for pid in _descendants_running("decode_clips"):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    seen.append(version)
            stop.wait(0.02)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        statuses = run_ray(ray_config("ray.max_task_retries=1", "ray.max_attempts=2", "pose.enabled=false"), clips, tmp_path)
    finally:
        stop.set()
        t.join()
    assert killed  # the worker really died
    st = statuses[0]
    assert st["status"] == "quarantined" and st["failures"] == 2, st
    assert "worker processing it died" in st["error"]


def test_interrupted_driver_does_not_count_against_the_clip(ray_instance, footage_dir: Path, tmp_path: Path):
    import json
    import signal
    import subprocess
    import sys
    import time

    clip = sorted(footage_dir.glob("*.mp4"))[0]
    c = find_clips([clip], RunConfig().phase.pattern)[0]
    status = tmp_path / "out" / "status" / f"{c.clip_id}.json"
    driver = ("import sys; from handclust import discover; discover(sys.argv[1], out=sys.argv[2], progress=False, overrides="
              "['runner=ray', 'ray.max_attempts=1', 'ray.actor_num_cpus=0.3', 'pose.enabled=false'])")
    ray_tmp = tempfile.mkdtemp(prefix="hcint")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    p = subprocess.Popen([sys.executable, "-c", driver, str(clip), str(tmp_path / "out")], env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (status.exists() and json.loads(status.read_text())["status"] == "running"):
            time.sleep(0.05)
        assert status.exists(), "the driver never started the clip"
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # the driver and what it started: its own process group only
        p.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert json.loads(status.read_text())["status"] == "running"
    statuses = run_ray(ray_config("ray.max_attempts=1", "pose.enabled=false"), [c], tmp_path / "out")
    assert statuses[0]["status"] == "ok" and statuses[0]["failures"] == 0, statuses[0]


def _own_ray_daemons(ray_tmp: str) -> dict[int, str]:
    """Pids and names of the Ray processes of the instance whose temp dir is ``ray_tmp`` (one run's own)."""
    found = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                argv = (d / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if any(ray_tmp in a for a in argv):
                found[int(d.name)] = Path(argv[0]).name
    return found


def test_ray_dying_mid_run_is_one_line_and_the_rerun_resumes(footage_dir: Path, tmp_path: Path):
    """The GCS and raylet of the run's own local instance are killed while a clip is being processed:
    one line (no traceback, no 60 s wait for Ray to end the process), the clip recorded as
    interrupted (not running, not counted against it), run.json says why, and the rerun finishes it."""
    import json
    import signal
    import subprocess
    import sys
    import time

    clip = sorted(footage_dir.glob("*.mp4"))[0]
    c = find_clips([clip], RunConfig().phase.pattern)[0]
    out = tmp_path / "out"
    status = out / "status" / f"{c.clip_id}.json"
    cmd = [str(Path(sys.executable).with_name("handclust")), "run", str(clip), "--out", str(out), "--no-progress",
           "--set", "runner=ray", "--set", "ray.actor_num_cpus=0.3", "--set", "pose.enabled=false",
           "--set", "report.enabled=false", "--set", "evaluation.ablations=false"]
    ray_tmp = tempfile.mkdtemp(prefix="hcdie")  # the run's own Ray temp dir: how its daemons are told apart
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("RAY_ADDRESS", None)
    p = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (status.exists() and json.loads(status.read_text())["status"] == "running"):
            time.sleep(0.05)
        daemons = {pid: name for pid, name in _own_ray_daemons(ray_tmp).items() if name in ("gcs_server", "raylet")}
        assert sorted(daemons.values()) == ["gcs_server", "raylet"], daemons
        for pid in daemons:
            os.kill(pid, signal.SIGKILL)
        # The one "Ray failed mid-run" line below proves our watch ended the driver (Ray alone would
        # only after 60 s, with its own error); the timeout only guards against a hang under load.
        stdout, stderr = p.communicate(timeout=240)
        deadline = time.time() + 30
        while _own_ray_daemons(ray_tmp) and time.time() < deadline:
            time.sleep(0.2)
        left = _own_ray_daemons(ray_tmp)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        for pid in _own_ray_daemons(ray_tmp):
            os.kill(pid, signal.SIGKILL)
    assert p.returncode == 1, stdout[-2000:] + stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Ray failed mid-run" in lines[0] and "rerun the same command to resume" in lines[0], stderr[-3000:]
    assert not left, left  # the dead instance's other processes went with it
    st = json.loads(status.read_text())
    assert st["status"] == "interrupted" and st["failures"] == 0, st
    rec = json.loads((out / "run.json").read_text())
    assert rec["status"] == "failed" and "Ray failed mid-run" in rec["error"]
    # Rerun: the same command resumes and finishes the clip.
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 ok, 0 failed" in r.stdout
    st = json.loads(status.read_text())
    assert st["status"] == "ok" and st["attempts"] == 2 and st["failures"] == 0, st
    assert json.loads((out / "run.json").read_text())["status"] == "ok"


def test_ray_watch_ends_the_run_itself_when_the_main_thread_never_takes_the_interrupt(tmp_path: Path):
    """Under load the driver's main thread can sit in Ray's own clean-up (a streaming dataset shutting
    down against the dead raylet) and never take the watch's interrupt; Ray would then end the
    process after 60 s with no word of ours. The watch gives the main thread a grace period, then
    records the run's end itself (the runner's callback) and exits with status 1."""
    import subprocess
    import sys
    import time

    script = tmp_path / "stuck.py"
    script.write_text(
        "import signal, subprocess, time\n"
        "from handclust.runtime.ray_runner import RayWatch\n"
        "daemon = subprocess.Popen(['sleep', '60'])\n"
        "watch = RayWatch(poll_s=0.05, on_stuck=lambda cause: print('ended by the watch:', cause, flush=True), grace_s=1.0)\n"
        "watch.daemons = [('gcs_server', daemon)]\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)  # the interrupt never lands in the main thread\n"
        "daemon.kill()\n"
        "time.sleep(60)\n"
        "print('the main thread went on')\n")
    t0 = time.time()
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert r.returncode == 1, r.stdout + r.stderr[-2000:]
    assert "ended by the watch: its gcs_server process" in r.stdout and "went on" not in r.stdout, r.stdout
    assert time.time() - t0 < 50  # well before Ray's own 60 s


def test_run_killed_part_way_keeps_each_committed_clip_and_the_rerun_resumes(ray_instance, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]):
    """One stream, no waves: each clip is committed by its own task as soon as its rows are through,
    while later clips still decode, so killing the driver after the first clip's status turns ok
    keeps that clip's outputs; the rerun processes only the rest and ends with the tables of an
    uninterrupted run."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from handclust.synthetic.footage_v1 import render_clip

    footage = tmp_path / "footage"
    footage.mkdir()
    for i, phase in enumerate(("production", "prep", "transit", "downtime")):
        render_clip(footage / f"{i + 1:02d}_{phase}.mp4", phase, 8.0, seed=20 + i, fps=10.0, size=(320, 180))
    clips = find_clips(footage, RunConfig().phase.pattern)
    out = tmp_path / "out"
    # One decode at a time, leaving CPU for a write task beside it (2-CPU instance).
    sets = ["runner=ray", "ray.actor_num_cpus=0.3", "ray.decode_concurrency=1", "ray.decode_num_cpus=0.5", "pose.enabled=false"]
    cmd = [str(Path(sys.executable).with_name("handclust")), "run", str(footage), "--out", str(out), "--no-progress",
           *[a for kv in sets for a in ("--set", kv)]]
    ray_tmp = tempfile.mkdtemp(prefix="hcwave")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("RAY_ADDRESS", None)

    def records() -> dict[str, dict]:
        found = {}
        for c in clips:
            f = out / "status" / f"{c.clip_id}.json"
            if f.exists():
                found[c.clip_id] = json.loads(f.read_text())
        return found

    def states() -> dict[str, str]:
        return {cid: st["status"] for cid, st in records().items()}

    p = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and "ok" not in states().values() and p.poll() is None:
            time.sleep(0.05)
        at_first_commit = states()
        still_running = p.poll() is None
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # the driver and what it started: its own process group only
        p.wait()
        for pid in _own_ray_daemons(ray_tmp):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    committed = [cid for cid, state in at_first_commit.items() if state == "ok"]
    # The first clip's outputs were there while the run was still going, before the other clips were.
    assert still_running and len(committed) == 1, at_first_commit
    # ... while the others were still in flight: started (decode runs ahead of the stages) but not committed.
    assert set(at_first_commit.values()) <= {"ok", "running"}, at_first_commit
    kept = states()
    done = [cid for cid, state in kept.items() if state == "ok"]
    assert set(committed) <= set(done) and len(done) < len(clips), kept  # killed part-way
    for cid in done:
        assert len(pd.read_parquet(out / "frames" / f"{cid}.parquet")) > 0
        assert len(pd.read_parquet(out / "segments" / f"{cid}.parquet")) > 0
    # The rerun processes only the clips not committed, and the tables equal an uninterrupted run's.
    # It holds the output folder's lock as `handclust run` does: taking over the killed run's lock
    # removes the half-written files the kill left (a write in flight when it landed).
    from handclust.io import run_lock
    from handclust.runtime.ray_runner import RayRunner

    cfg = ray_config("ray.decode_concurrency=1", "ray.decode_num_cpus=0.5", "pose.enabled=false")
    with run_lock.hold(OutputStore(out), "run"):
        runner = RayRunner(cfg, OutputStore(out), Progress(True))
        todo = [c for c in clips if not runner.is_done(c)]
        assert sorted(c.clip_id for c in todo) == sorted(c.clip_id for c in clips if c.clip_id not in done)
        statuses = runner.process_clips(todo)
    assert all(s["status"] == "ok" for s in statuses), statuses
    said = capsys.readouterr().err
    n = len(todo)  # a line per clip as it is committed, and one at the end
    assert all(f"] ok: {c.path}" in said for c in todo) and f"ray: [{n}/{n}] ok: " in said, said[-2000:]
    assert f"ray: committed: {n}/{n} clips ({n} ok)" in said, said[-2000:]
    for cid in done:
        assert OutputStore(out).read_json(f"status/{cid}.json")["attempts"] == 1  # committed: never redone
    whole = tmp_path / "whole"
    local = LocalRunner(cfg, OutputStore(whole), Progress(False))
    for clip in clips:
        assert local.process_clip(clip)["status"] == "ok"
    assert_same_tables(frames_of(out), frames_of(whole))
    assert_same_tables(segments_of(out), segments_of(whole))
    assert not list(out.rglob("*.tmp"))


class ThreadProbe:
    """A stage that reports the thread limits its actor runs under."""

    name = "probe"
    resources = Resources(num_cpus=0.3)

    def setup(self) -> None:
        pass

    def __call__(self, batch: Batch) -> Batch:
        import cv2
        from threadpoolctl import threadpool_info

        pools = [p["num_threads"] for p in threadpool_info()]
        return {"omp": np.array([os.environ.get("OMP_NUM_THREADS")], object), "cv2": np.array([cv2.getNumThreads()]),
                "pools_max": np.array([max(pools, default=1)])}


def test_stage_actors_hold_their_threads_to_their_cpus(ray_instance):
    """Per-actor thread limits (issue 13: faiss / OpenMP used every core of the node in every actor)."""
    from handclust.runtime.ray_runner import StageActor

    actor = ray.remote(num_cpus=0.3)(StageActor).remote(ThreadProbe(), threads=0.3)
    out = ray.get(actor.__call__.remote({"x": np.zeros(1)}))
    assert out["omp"][0] == "1" and out["cv2"][0] == 1 and out["pools_max"][0] == 1, out
    ray.kill(actor)


def _planted_modalities(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(3), 40)
    mods = {m: (rng.normal(size=(3, d))[truth] * 4 + rng.normal(size=(len(truth), d))).astype(np.float32)
            for m, d in (("scene", 16), ("motion", 8), ("ego", 6), ("rhythm", 4))}
    clips = np.array([f"clip{i % 6}" for i in range(len(truth))], dtype=object)
    return mods, clips, np.full(len(truth), 6.0)


def test_clustering_runs_as_a_ray_task_when_asked_with_the_drivers_result(ray_instance):
    """cluster.where=ray_task: fusion, HDBSCAN, kNN and the 2-D map run in one Ray task (on a GPU
    worker with cluster.num_gpus; 0 here) and give the driver's clusters; asking for a GPU the
    instance lacks stops with the fix instead of waiting forever."""
    from handclust.activities import clustering_place, run_grouping
    from handclust.config import ConfigError

    mods, clips, durations = _planted_modalities()
    cfg = ray_config("cluster.backend=cpu", "cluster.map_method=pca", "cluster.stability=false")
    assert clustering_place(cfg) == "driver"
    assert clustering_place(ray_config("cluster.backend=gpu")) == "ray_task"  # GPU clustering leaves the CPU head
    assert clustering_place(load_config(None, ["runner=local", "cluster.backend=gpu"])) == "driver"
    g0, xy0, _, _, on0 = run_grouping("driver", cfg, mods, clips, durations, {})
    task_cfg = ray_config("cluster.backend=cpu", "cluster.map_method=pca", "cluster.stability=false",
                          "cluster.where=ray_task", "cluster.num_gpus=0", "cluster.num_cpus=1")
    g1, xy1, _, took, on1 = run_grouping(clustering_place(task_cfg), task_cfg, mods, clips, durations, {})
    assert on0 == "driver" and on1.startswith("ray task (0 GPU, 1 CPU)"), on1
    assert g0.clustering.k == 3 and (g0.clustering.labels == g1.clustering.labels).all()
    assert np.allclose(xy0, xy1) and took["clustering"] > 0
    gpu_cfg = ray_config("cluster.backend=gpu", "cluster.num_gpus=1")
    with pytest.raises(ConfigError, match="cluster.backend=cpu"):
        run_grouping("ray_task", gpu_cfg, mods, clips, durations, {})


class FailsOnClip:
    """Pass-through stage that raises on the rows of one clip (a stage bug that one clip's content triggers)."""

    name = "fails_on_clip"
    resources = Resources(num_cpus=0.2, batch_size=8)

    def __init__(self, clip_id: str):
        self.clip_id = clip_id

    def setup(self) -> None:
        pass

    def __call__(self, batch: Batch) -> Batch:
        if self.clip_id in np.asarray(batch["clip_id"]).astype(str):
            raise ValueError("operands could not be broadcast together\nsecond line")
        return batch


def test_a_failing_frame_stage_is_the_same_clip_error_on_both_runners(ray_instance, short_clip: Path, tmp_path: Path):
    """One clip job, one error policy: the Ray runner dropped the block and settled the clip as 'the worker
    processing it died'; now both record 'computing frame features failed (...)' once, and the other clip is ok."""
    from handclust.synthetic.footage_v1 import render_clip

    other = tmp_path / "02_prep_other.mp4"
    render_clip(other, "prep", 6.0, seed=5, fps=10.0, size=(160, 90))
    clips = find_clips([short_clip, other], RunConfig().phase.pattern)
    bad = clips[0].clip_id
    cfg = ray_config("pose.enabled=false", "ray.max_attempts=3")
    scene, motion = frame_stages(cfg)
    ray_st = {s["clip_id"]: s for s in run_ray(cfg, clips, tmp_path / "ray", stages=[scene, FailsOnClip(bad), motion])}
    local = LocalRunner(cfg.model_copy(update={"runner": "local"}), OutputStore(tmp_path / "local"), Progress(False))
    local.stages = [scene, FailsOnClip(bad), motion]
    local_st = {c.clip_id: local.process_clip(c) for c in clips}
    for st in (ray_st, local_st):
        assert st[bad]["status"] == "error" and st[bad]["failures"] == 1, st[bad]
        assert "computing frame features failed (ValueError: operands could not be broadcast together)" in st[bad]["error"]
        assert "died" not in st[bad]["error"] and "\n" not in st[bad]["error"]
        assert st[clips[1].clip_id]["status"] == "ok"
    assert ray_st[bad]["error"] == local_st[bad]["error"]
    assert not (tmp_path / "ray" / "segments" / f"{bad}.parquet").exists()
