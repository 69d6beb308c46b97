"""The command line as a user types it (installed console script)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HANDCLUST = [str(Path(sys.executable).with_name("handclust"))]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(HANDCLUST + list(args), capture_output=True, text=True, cwd=cwd, timeout=600)


def test_help_reads_well():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("sample-footage", "run", "config", "summary"):
        assert cmd in r.stdout
    r = run("run", "--help")
    assert "--set" in r.stdout and "manifest" in r.stdout


def test_bad_config_key_exits_with_named_key(tmp_path: Path, footage_dir: Path):
    r = run("run", str(footage_dir), "--out", str(tmp_path / "o"), "--set", "segment.min_segmnt_s=3")
    assert r.returncode == 2
    assert "segment.min_segmnt_s" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o" / "clips.parquet").exists()  # stopped before any work
    rec = json.loads((tmp_path / "o" / "run.json").read_text())  # and said why where the run would write
    assert rec["status"] == "failed" and "segment.min_segmnt_s" in rec["error"]
    assert rec["failed_attempt"]["overrides"] == ["segment.min_segmnt_s=3"]


@pytest.mark.slow
def test_missing_footage_and_empty_dir(tmp_path: Path):
    r = run("run", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    (tmp_path / "empty").mkdir()
    r = run("run", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no video files" in r.stderr


def test_run_without_out_writes_nothing_into_the_working_directory(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    r = run("run", "empty", cwd=tmp_path)
    assert r.returncode == 2 and "--out" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_out_that_is_an_existing_file_is_refused(tmp_path: Path, footage_dir: Path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    r = run("run", str(footage_dir), "--out", str(target), "--set", "runner=local")
    assert r.returncode == 2 and "existing file" in _one_line_error(r)
    assert target.read_text() == "mine"


def test_read_only_out_is_refused_before_any_work(tmp_path: Path, footage_dir: Path):
    out = tmp_path / "ro"
    out.mkdir()
    cmd = " ".join(HANDCLUST + ["run", str(footage_dir), "--out", str(out / "run"), "--set", "runner=local"])
    if os.geteuid() == 0:  # root writes through mode bits: make a real read-only mount in a private mount namespace
        if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
            pytest.skip("running as root without mount namespaces (unshare -m): no way to make a read-only folder")
        r = subprocess.run(["unshare", "-m", "bash", "-c", f"mount --make-rprivate / && mount --bind {out} {out} && "
                            f"mount -o remount,ro,bind {out} && exec {cmd}"], capture_output=True, text=True, timeout=600)
    else:
        out.chmod(0o555)
        r = subprocess.run(cmd.split(), capture_output=True, text=True, timeout=600)
        out.chmod(0o755)
    assert r.returncode == 2, r.stderr
    line = _one_line_error(r)
    assert "cannot write" in line and str(out) in line
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_manifest_that_is_not_parquet_or_not_utf8_is_named(tmp_path: Path):
    fake = tmp_path / "clips.parquet"
    fake.write_text("path\na.mp4\n")
    r = run("run", str(fake), "--out", str(tmp_path / "o"), "--set", "runner=local")
    line = _one_line_error(r)
    assert r.returncode == 2 and str(fake) in line and "not a readable Parquet file" in line
    latin = tmp_path / "clips.csv"
    latin.write_bytes("path\nbaustelle_\xfcber.mp4\n".encode("latin-1"))
    r = run("run", str(latin), "--out", str(tmp_path / "o"), "--set", "runner=local")
    line = _one_line_error(r)
    assert r.returncode == 2 and str(latin) in line and "UTF-8" in line


def test_ray_failing_to_start_is_one_line_and_recorded(tmp_path: Path, footage_dir: Path):
    # A temp dir too long for Ray's unix sockets (107 bytes): Ray cannot start, as on a broken host.
    long_tmp = tmp_path / ("x" * 120)
    long_tmp.mkdir()
    clip = sorted(footage_dir.glob("*.mp4"))[0]
    env = {**os.environ, "RAY_TMPDIR": str(long_tmp)}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run(HANDCLUST + ["run", str(clip), "--out", str(tmp_path / "o"), "--no-progress", "--set", "runner=ray",
                                    "--set", "pose.enabled=false"], capture_output=True, text=True, timeout=600, env=env)
    line = _one_line_error(r)
    assert r.returncode == 1 and "could not start a local Ray instance" in line
    assert "RAY_TMPDIR" in line and "--set runner=local" in line  # the fix
    rec = json.loads((tmp_path / "o" / "run.json").read_text())
    assert rec["status"] == "failed" and "could not start a local Ray instance" in rec["error"]
    assert rec["failed_attempt"]["config"]["runner"] == "ray"


def test_run_prints_summary_and_failed_clips(tmp_path: Path, footage_dir: Path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sorted(footage_dir.glob("*.mp4"))[0], src)
    (src / "09_transit_broken.mp4").write_bytes(b"not a video")
    r = run("run", str(src), "--out", str(tmp_path / "out"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "1 ok, 1 failed" in r.stdout and "09_transit_broken.mp4" in r.stdout
    assert "activities" in r.stdout and "backends" in r.stdout
    s = run("summary", str(tmp_path / "out"))
    assert json.loads(s.stdout)["clips_failed"] == 1
    # The default runner is a local Ray instance (DESIGN.md); this test is its end-to-end check.
    assert json.loads((tmp_path / "out" / "run.json").read_text())["config"]["runner"] == "ray"


@pytest.mark.slow
def test_all_clips_bad_exits_nonzero(tmp_path: Path):
    (tmp_path / "a.mp4").write_bytes(b"")
    r = run("run", str(tmp_path), "--out", str(tmp_path / "out"), "--no-progress", "--set", "runner=local")
    assert r.returncode == 1
    assert "0 ok, 1 failed" in r.stdout


@pytest.mark.parametrize("flag", ["--clips=0", "--size=big"])
def test_sample_footage_rejects_bad_options(tmp_path: Path, flag: str):
    r = run("sample-footage", str(tmp_path / "f"), flag)
    assert r.returncode == 2


def test_full_disk_mid_run_is_one_line_and_keeps_what_was_written(tmp_path: Path, footage_dir: Path):
    """A real full filesystem (a 64 MiB tmpfs in a private mount namespace): a finished run is there, the disk
    fills up, and the next run, which adds a clip, stops with one line naming the folder and the fix,
    leaving the finished outputs byte for byte and no half-written file."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or \
            subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("a full filesystem needs a private tmpfs: root and mount namespaces (unshare -m)")
    a, b = sorted(footage_dir.glob("*.mp4"))[:2]
    src, disk, log = tmp_path / "in", tmp_path / "disk", tmp_path / "log"
    for d in (src, disk, log):
        d.mkdir()
    shutil.copy(a, src)
    out = disk / "out"
    cmd = " ".join(HANDCLUST + ["run", str(src), "--out", str(out), "--no-progress", "--set", "runner=local",
                                "--set", "report.enabled=false", "--set", "evaluation.ablations=false"])
    digest = f"(cd {out} && find . -type f | sort | xargs sha256sum)"
    script = f"""
mount --make-rprivate / && mount -t tmpfs -o size=64m tmpfs {disk} || exit 97
{cmd} > {log}/first.out 2> {log}/first.err; echo $? > {log}/first.rc
{digest} > {log}/before.sha
cp {b} {src}/
dd if=/dev/zero of={disk}/filler bs=1M 2>/dev/null  # until the disk is full
{cmd} > {log}/second.out 2> {log}/second.err; echo $? > {log}/second.rc
{digest} > {log}/after.sha
find {out} -name '*.tmp' > {log}/tmp_left
"""
    r = subprocess.run(["unshare", "-m", "bash", "-c", script], capture_output=True, text=True, timeout=600)
    assert r.returncode != 97, r.stderr
    assert (log / "first.rc").read_text().strip() == "0", (log / "first.err").read_text()[-3000:]
    second = subprocess.CompletedProcess([], int((log / "second.rc").read_text()), (log / "second.out").read_text(),
                                         (log / "second.err").read_text())
    assert second.returncode == 1, second.stderr[-3000:]
    line = _one_line_error(second)
    assert str(out) in line and "No space left on device" in line and "free space or choose another --out" in line, line
    before = set((log / "before.sha").read_text().splitlines())
    assert any(h.endswith("./run.json") for h in before) and any("/segments/" in h for h in before), before
    assert before <= set((log / "after.sha").read_text().splitlines())  # the finished run's files, run.json too
    assert (log / "tmp_left").read_text() == ""  # no half-written file left behind


@pytest.mark.slow
def test_quarantined_clip_is_counted_and_says_how_to_retry(tmp_path: Path):
    """A clip that failed ray.max_attempts times: the summary counts it and names the file to delete."""
    from handclust.config import load_config
    from handclust.io.footage import find_clips
    from handclust.pipeline import feature_fingerprint

    src = tmp_path / "in"
    src.mkdir()
    (src / "02_transit_crashes.mp4").write_bytes(b"\x00junk" * 100)
    sets = ["runner=ray", "ray.max_attempts=2", "report.enabled=false"]
    clip = find_clips(src, load_config(None, sets).phase.pattern)[0]
    status = tmp_path / "out" / "status" / f"{clip.clip_id}.json"
    status.parent.mkdir(parents=True)
    # As two runs whose decode worker died with this clip leave it (tests/test_ray.py kills real workers).
    status.write_text(json.dumps({"clip_id": clip.clip_id, "path": clip.path, "size_bytes": clip.size_bytes,
                                  "phase": clip.phase, "attempts": 2, "failures": 2, "status": "error",
                                  "error": f"{clip.path}: the worker processing it died (2 failed attempt(s))",
                                  "fingerprint": feature_fingerprint(load_config(None, sets))}))
    r = run("run", str(src), "--out", str(tmp_path / "out"), "--no-progress", *[a for kv in sets for a in ("--set", kv)])
    assert r.returncode == 1, r.stderr[-3000:]  # nothing usable came out of the run
    assert "0 ok, 0 failed, 1 quarantined (of 1)" in r.stdout, r.stdout
    assert f"to retry it: delete {status} and rerun" in r.stdout
    assert json.loads(status.read_text())["status"] == "quarantined"


@pytest.mark.slow
def test_timestamp_gap_makes_the_clip_partial_not_hours_of_footage(tmp_path: Path):
    """4 s of frames, 10 minutes with none, 4 s more: the clip is partial with the gap named, and only
    the 4 s before it count as footage (nothing is made up across the gap)."""
    import fractions

    import av
    import numpy as np
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    pts = [200 * i for i in range(20)] + [600_000 + 200 * i for i in range(20)]
    src = tmp_path / "in"
    src.mkdir()
    clip = src / "01_production_gap.mp4"
    with av.open(str(clip), mode="w") as c:
        s = c.add_stream("libx264", rate=5)
        s.height, s.width, s.pix_fmt = 72, 128, "yuv420p"
        s.codec_context.time_base = s.time_base = fractions.Fraction(1, 1000)
        for t in pts:
            vf = av.VideoFrame.from_ndarray(rng.integers(0, 255, (72, 128, 3), dtype=np.uint8), format="rgb24")
            vf.pts, vf.time_base = t, s.time_base
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    r = run("run", str(src), "--out", str(tmp_path / "out"), "--no-progress", "--set", "runner=local",
            "--set", "report.enabled=false", "--set", "pose.enabled=false")
    assert r.returncode == 0, r.stderr[-3000:]
    row = pq.read_table(tmp_path / "out" / "clips.parquet").to_pylist()[0]
    assert row["status"] == "partial" and "gap in the recording" in row["error"] and str(clip) in row["error"], row
    assert row["duration_s"] < 5.0 and row["n_frames"] <= 20, row
