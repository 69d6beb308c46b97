"""The command line as a user types it (installed console script)."""

import json
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


def test_missing_footage_and_empty_dir(tmp_path: Path):
    r = run("run", str(tmp_path / "nope"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    (tmp_path / "empty").mkdir()
    r = run("run", str(tmp_path / "empty"))
    assert r.returncode == 2 and "no video files" in r.stderr


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
