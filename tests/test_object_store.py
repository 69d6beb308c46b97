"""Outputs on an object store: a real S3 API (moto's server on loopback) through pyarrow's S3 filesystem.

A user on a cluster points ``--out`` at ``s3://bucket/prefix``; every table, JSON file, the model
files ``assign`` needs and the report must land there, and a rerun must resume from what is there.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from handclust import discover


@pytest.fixture
def s3_uri(s3_bucket, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HANDCLUST_CACHE_DIR", str(tmp_path / "clip-cache"))
    root = s3_bucket("handclust-test")
    yield lambda prefix: f"{root}/{prefix}"


def _files(uri: str) -> dict[str, int]:
    fs, root = pafs.FileSystem.from_uri(uri)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return {i.path[len(root) + 1:]: i.size for i in infos if i.type == pafs.FileType.File}


def test_run_writes_to_s3_and_resumes_there(s3_uri, footage_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from handclust import pipeline

    src = tmp_path / "in"
    src.mkdir()
    for p in sorted(footage_dir.glob("*.mp4"))[:2]:
        shutil.copy(p, src / p.name)
    out = s3_uri("runs/a")
    result = discover(src, out=out, progress=False, overrides=["runner=local", "report.reel=false"])
    assert result.summary["clips_ok"] == 2

    files = _files(out)
    for name in ("clips.parquet", "clusters.parquet", "run.json", "eval.json", "model/fusion.npz",
                 "model/index.faiss", "report/index.html"):
        assert files.get(name, 0) > 0, f"{name} missing on the object store: {sorted(files)}"
    assert sum(n.startswith("segments/") for n in files) == 2
    assert not any(Path(n).name.startswith(".") for n in files), "temporaries left behind"

    fs, root = pafs.FileSystem.from_uri(out)
    clusters = pq.read_table(f"{root}/clusters.parquet", filesystem=fs)
    assert clusters.num_rows == result.clusters.num_rows
    with fs.open_input_stream(f"{root}/run.json") as f:
        assert json.loads(f.read())["summary"]["clips_ok"] == 2

    # A rerun into the same prefix finds the finished clips there and decodes nothing.
    calls: list[str] = []
    real = pipeline.LocalRunner.process_clip
    monkeypatch.setattr(pipeline.LocalRunner, "process_clip", lambda self, clip: (calls.append(clip.path), real(self, clip))[1])
    again = discover(src, out=out, progress=False, overrides=["runner=local", "report.enabled=false"])
    assert calls == []
    assert again.clusters.num_rows == result.clusters.num_rows


def test_cli_reads_a_run_on_s3(s3_uri, footage_dir: Path, tmp_path: Path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sorted(footage_dir.glob("*.mp4"))[0], src)
    out = s3_uri("runs/cli")
    handclust = str(Path(sys.executable).with_name("handclust"))
    r = subprocess.run([handclust, "run", str(src), "--out", out, "--no-progress", "--set", "runner=local",
                        "--set", "report.enabled=false"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    s = subprocess.run([handclust, "summary", out], capture_output=True, text=True, timeout=120)
    assert s.returncode == 0, s.stderr
    assert json.loads(s.stdout)["clips_ok"] == 1


@pytest.mark.ray
def test_ray_run_reads_clips_from_s3_manifest(s3_uri, footage_dir: Path, tmp_path: Path):
    """The cluster case: footage listed in a manifest on the store, clips fetched by the workers."""
    fs, _ = pafs.FileSystem.from_uri(s3_uri(""))
    clips = sorted(footage_dir.glob("*.mp4"))[:2]
    for p in clips:
        with fs.open_output_stream(f"handclust-test/footage/site-a/{p.name}") as f:
            f.write(p.read_bytes())
    with fs.open_output_stream("handclust-test/footage/manifest.csv") as f:  # relative to the manifest
        f.write(("path\n" + "".join(f"site-a/{p.name}\n" for p in clips) + "site-a/07_transit_missing.mp4\n").encode())
    out = s3_uri("runs/ray")
    result = discover(s3_uri("footage/manifest.csv"), out=out, progress=False,
                      overrides=["runner=ray", "report.enabled=false", "evaluation.ablations=false"])
    rows = {Path(r["path"]).name: r for r in result.clips.to_pylist()}
    assert [rows[p.name]["status"] for p in clips] == ["ok", "ok"]
    assert rows[clips[0].name]["path"] == s3_uri(f"footage/site-a/{clips[0].name}")
    assert rows[clips[0].name]["phase"] is not None
    missing = rows["07_transit_missing.mp4"]
    assert missing["status"] == "error" and "s3://handclust-test/footage/site-a/07_transit_missing.mp4" in missing["error"]
    assert len(list((tmp_path / "clip-cache").glob("*.mp4"))) == 2  # fetched once into the clip cache

    # Same segments as the local runner on the local files: fetching changes nothing.
    local = discover(clips, out=tmp_path / "local", progress=False,
                     overrides=["runner=local", "report.enabled=false", "evaluation.ablations=false"])
    def bounds(tbl):
        names = {r["clip_id"]: Path(r["path"]).name for r in tbl.clips.to_pylist()}
        return sorted((names[c], round(a, 3)) for c, a in zip(tbl.segments.column("clip_id").to_pylist(),
                                                              tbl.segments.column("t_start").to_pylist()))
    assert bounds(result) == bounds(local)
