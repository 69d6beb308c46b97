"""handclust assign: new footage placed into an earlier run's activities without refitting."""

import json
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner

from handclust.cli import cli
from handclust.synthetic.sample import make_sample_footage


def test_assign_places_new_clips_into_the_earlier_activities(demo_run, tmp_path: Path):
    out = Path(demo_run.out)
    for rel in ("model/fusion.npz", "model/reference.parquet", "model/index.faiss", "hierarchy.parquet"):
        assert (out / rel).exists(), rel
    # New footage: other clips (another seed: other lighting, lens, bouts) of the same activities.
    # 1 min each: the model normalises each clip within itself, and a new clip's mean from the ~5
    # segments of 30 s is noisy (ARI 0.22-0.43 across renders; 0.65 with 1 min clips).
    new = make_sample_footage(tmp_path / "new", n_clips=2, minutes=1.0, seed=11, fps=10.0, size=(320, 180))
    r = CliRunner().invoke(cli, ["assign", str(out), str(new), "--out", str(tmp_path / "a"), "--no-progress",
                                 "--set", "report.enabled=false"])
    assert r.exit_code == 0, r.output
    clusters = pq.read_table(tmp_path / "a" / "clusters.parquet").to_pandas()
    model_ids = set(pq.read_table(out / "clusters.parquet").column("cluster").to_pylist())
    assert len(clusters) > 0 and set(clusters.cluster) <= model_ids  # no new ids: nothing refitted
    ev = json.loads((tmp_path / "a" / "eval.json").read_text())
    # Placed by neighbours, the new clips agree with their truth about as well as the fit did.
    assert ev["ground_truth"]["ari"] > 0.35, ev["ground_truth"]
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["mode"] == "assign" and run["assigned_from"] == str(out)
    assert len(list((tmp_path / "a" / "timelines").glob("*.json"))) == 2


def test_assign_without_a_model_names_the_fix(tmp_path: Path, footage_dir: Path):
    (tmp_path / "old").mkdir()
    r = CliRunner().invoke(cli, ["assign", str(tmp_path / "old"), str(footage_dir), "--out", str(tmp_path / "a")])
    assert r.exit_code != 0 and "handclust run" in r.output


def test_assign_refuses_to_write_into_the_model_run(demo_run, tmp_path: Path, footage_dir: Path):
    out = Path(demo_run.out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    for target in (out, out / "week2"):
        r = CliRunner().invoke(cli, ["assign", str(out), str(footage_dir), "--out", str(target), "--no-progress"])
        assert r.exit_code == 2 and "overwrite the run" in r.output, r.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # nothing written


def test_assign_refuses_overrides_that_change_the_features(demo_run, tmp_path: Path, footage_dir: Path):
    r = CliRunner().invoke(cli, ["assign", str(demo_run.out), str(footage_dir), "--out", str(tmp_path / "a"),
                                 "--no-progress", "--set", "decode.sample_fps=10"])
    assert r.exit_code == 2 and "decode.sample_fps" in r.output, r.output
    assert not (tmp_path / "a" / "status").exists()  # refused before any clip was processed


def test_assign_names_a_run_json_this_version_cannot_read(demo_run, tmp_path: Path, footage_dir: Path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(demo_run.out, model)
    rec = json.loads((model / "run.json").read_text())
    rec["config"]["scene"]["new_setting"] = 1
    (model / "run.json").write_text(json.dumps(rec))
    r = CliRunner().invoke(cli, ["assign", str(model), str(footage_dir), "--out", str(tmp_path / "a"), "--no-progress"])
    assert r.exit_code == 2 and str(model / "run.json") in r.output and "scene.new_setting" in r.output, r.output
    assert not (tmp_path / "a" / "status").exists()


def test_assign_refuses_descriptors_of_another_size_before_any_clip(demo_run, tmp_path: Path, footage_dir: Path):
    """A model whose motion descriptors are narrower than this version's (made by another version):
    refused with the sizes and the fix before a single new clip is decoded, not after all of them."""
    import shutil

    import numpy as np

    model = tmp_path / "model"
    shutil.copytree(demo_run.out, model)
    z = dict(np.load(model / "model" / "fusion.npz"))
    wide = len(z["motion.mean"])
    z["motion.mean"], z["motion.scale"] = z["motion.mean"][:70], z["motion.scale"][:70]
    z["motion.components"] = z["motion.components"][:, :70]
    with open(model / "model" / "fusion.npz", "wb") as f:
        np.savez(f, **z)
    r = CliRunner().invoke(cli, ["assign", str(model), str(footage_dir), "--out", str(tmp_path / "a"), "--no-progress",
                                 "--set", "runner=local"])
    assert r.exit_code == 2, r.output
    assert str(model / "model" / "fusion.npz") in r.output and f"70 dims, this version of handclust makes {wide}" in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "a" / "status").exists() and not (tmp_path / "a" / "frames").exists()  # no clip was processed
