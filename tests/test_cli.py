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
    rec = json.loads((tmp_path / "o" / "run.json").read_text())
    assert rec["status"] == "failed" and "Ray" in rec["error"]


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


def test_all_clips_bad_exits_nonzero(tmp_path: Path):
    (tmp_path / "a.mp4").write_bytes(b"")
    r = run("run", str(tmp_path), "--out", str(tmp_path / "out"), "--no-progress", "--set", "runner=local")
    assert r.returncode == 1
    assert "0 ok, 1 failed" in r.stdout


@pytest.mark.parametrize("flag", ["--clips=0", "--size=big"])
def test_sample_footage_rejects_bad_options(tmp_path: Path, flag: str):
    r = run("sample-footage", str(tmp_path / "f"), flag)
    assert r.returncode == 2
