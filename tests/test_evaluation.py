"""Evaluation: temporal action segmentation metrics on known sequences, ablations and the
evaluate / segment-features commands on real outputs."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from handclust.cli import cli
from handclust.core.metrics import edit_score, f1_counts, hungarian_match, segmentation_scores


def test_tas_metrics_match_hand_computed_values():
    truth = ["a"] * 10 + ["b"] * 10 + ["a"] * 5
    pred = [3] * 10 + [5] * 12 + [3] * 3  # b runs 2 frames long
    s = segmentation_scores(truth, pred, ["v"] * 25)
    for block in ("per_video", "whole_set"):  # one video: both protocols agree
        assert s[block]["mof"] == pytest.approx(23 / 25)
        assert s[block]["edit"] == 1.0 and s[block]["f1@50"] == 1.0
    # Over-segmenting: an extra cluster is matched to nothing and its frames count as wrong.
    pred2 = [3] * 10 + [5] * 5 + [7] * 5 + [3] * 5
    s2 = segmentation_scores(truth, pred2, ["v"] * 25)
    assert s2["whole_set"]["mof"] == s2["per_video"]["mof"] == pytest.approx(20 / 25)
    assert hungarian_match(truth, pred2) in ({3: "a", 5: "b"}, {3: "a", 7: "b"})
    assert edit_score(list("aba"), list("abca")) == pytest.approx(1 - 1 / 4)  # runs a,b,c,a vs a,b,a
    tp, fp, fn = f1_counts(list("aaaabbbb"), list("aaaaaaab"), 0.5)
    assert (tp, fp, fn) == (1, 1, 1)  # b predicted 1 frame of 4: IoU 0.25


def test_per_video_permutation_of_truth_is_perfect_per_video_only():
    """Each video's clusters are a relabelling of its truth, but not the same relabelling."""
    truth = ["a"] * 5 + ["b"] * 5 + ["c"] * 5 + ["a"] * 5 + ["b"] * 5 + ["c"] * 5
    pred = [0] * 5 + [1] * 5 + [2] * 5 + [1] * 5 + [2] * 5 + [0] * 5  # v2: a->1, b->2, c->0
    s = segmentation_scores(truth, pred, ["v1"] * 15 + ["v2"] * 15)
    pv, ws = s["per_video"], s["whole_set"]
    assert pv["mof"] == pv["f1@10"] == pv["f1@50"] == pv["edit"] == 1.0
    # One matching over both videos: v1 is right, v2 entirely wrong.
    assert ws["mof"] == pytest.approx(0.5)
    assert ws["f1@50"] == pytest.approx(0.5)  # 3 of 6 segments hit: P = R = 1/2
    assert ws["edit"] == pytest.approx((1.0 + 1 / 3) / 2)  # v2 reads b,c,a for a,b,c: 2 edits of 3 runs
    assert s["videos"]["v2"] == {"frames": 15, "mof_per_video": 1.0, "mof_whole_set": 0.0}
    assert s["ari"] < 1.0 and s["classes"] == 3 and s["clusters"] == 3


def test_per_video_mof_is_frame_weighted_and_f1_averaged_over_videos():
    # v1 (10 frames) perfect; v2 (30 frames) predicts one cluster for two actions of 15 frames.
    truth = ["a"] * 5 + ["b"] * 5 + ["a"] * 15 + ["b"] * 15
    pred = [0] * 5 + [1] * 5 + [0] * 30
    s = segmentation_scores(truth, pred, ["v1"] * 10 + ["v2"] * 30)
    pv = s["per_video"]
    assert pv["mof"] == pytest.approx((10 + 15) / 40)  # not the mean of 1.0 and 0.5
    # v2: one predicted run of 30 vs two true of 15: IoU 0.5 with "a" -> at 50 %, P = 1, R = 1/2.
    assert pv["f1@50"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert pv["edit"] == pytest.approx((1.0 + 0.5) / 2)
    assert "matching" in pv and "match" in s["whole_set"]


def test_eval_json_has_ablations_and_ground_truth(demo_run):
    out = Path(demo_run.out)
    ev = json.loads((out / "eval.json").read_text())
    names = [r["name"] for r in ev["ablations"]]
    assert names[0] == "fusion (this run)"
    assert {"motion only", "scene only", "motion + scene", "rhythm only", "ego only"} <= set(names)
    computed = [r for r in ev["ablations"] if "not_computed" not in r]
    for r in ev["ablations"]:
        if "not_computed" in r:  # e.g. pose only, on footage where MediaPipe saw no hand or body at all
            assert r["modalities"] == ["pose"] and r["not_computed"] == "no segment observed pose"
            continue
        assert r["k"] >= 0 and 0 <= r["noise_rate"] <= 1
        assert set(r["phase"]["duration_weighted"]) >= {"ari", "nmi", "v_measure"}
        assert {"mixing_entropy", "multi_clip_share"} <= set(r["cross_clip"])
        assert {"mof", "f1@10", "f1@25", "f1@50", "edit"} <= set(r["ground_truth"])
    gt = ev["ground_truth"]
    assert gt["mof"] > 0.6 and gt["f1@10"] > 0.3 and 0 < gt["edit"] <= 1
    # Both matchings, named; the headline is the whole-set one (clusters are shared across clips).
    assert gt["mof"] == gt["whole_set"]["mof"] and gt["f1@50"] == gt["whole_set"]["f1@50"]
    assert gt["per_video"]["mof"] >= gt["whole_set"]["mof"]
    fused = {r["name"]: r for r in ev["ablations"]}
    # The fusion beats the scene descriptor alone against the truth on this footage.
    assert fused["fusion (this run)"]["ground_truth"]["ari"] > fused["scene only"]["ground_truth"]["ari"]
    per_clip = [r for r in ev["per_clip"] if r["variant"] == "motion only"]
    assert len(per_clip) == 4 and all(r["k"] >= 1 for r in per_clip)
    abl = pq.read_table(out / "ablations.parquet").to_pandas()
    assert set(abl.variant) == {r["name"] for r in computed}
    assert (abl.groupby("variant").size() == demo_run.segments.num_rows).all()


def test_evaluate_command_recomputes_with_another_phase_pattern(demo_run, tmp_path: Path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(demo_run.out, out)
    r = CliRunner().invoke(cli, ["evaluate", str(out), "--no-ablations", "--set", "phase.pattern=(production|transit)"])
    assert r.exit_code == 0, r.output
    assert "MoF" in r.output
    ev = json.loads((out / "eval.json").read_text())
    assert ev["phase_pattern"] == "(production|transit)" and ev["ablations"] == []
    before = json.loads((Path(demo_run.out) / "eval.json").read_text())
    assert ev["keypoints"] == before["keypoints"]  # per-activity profiles survive a re-evaluation
    bad = CliRunner().invoke(cli, ["evaluate", str(tmp_path)])
    assert bad.exit_code != 0 and "handclust run" in bad.output


def _feature_dir(root: Path, rng: np.random.Generator, fps: float) -> dict[str, list[str]]:
    """Four videos of piecewise-constant features (three actions, random order and lengths)."""
    actions = {"take_cup": rng.normal(0, 1, 32), "pour_milk": rng.normal(0, 1, 32), "stir": rng.normal(0, 1, 32)}
    (root / "features").mkdir(parents=True)
    (root / "groundTruth").mkdir()
    (root / "mapping.txt").write_text("\n".join(f"{i} {a}" for i, a in enumerate(actions)) + "\n")
    truths = {}
    for v in range(4):
        labels: list[str] = []
        for a in rng.permutation(list(actions)).tolist() * 2:
            labels += [a] * int(rng.integers(8 * fps, 16 * fps))
        x = np.stack([actions[a] for a in labels]) + rng.normal(0, 0.6, (len(labels), 32))
        name = f"P{v:02d}_coffee"
        if v % 2:  # both layouts the data sets use: .npy stored dims x frames, .txt frames x dims
            np.save(root / "features" / f"{name}.npy", x.T.astype(np.float32))
        else:
            np.savetxt(root / "features" / f"{name}.txt", x, fmt="%.4f")
        (root / "groundTruth" / f"{name}.txt").write_text("\n".join(labels) + "\n")
        truths[name] = labels
    return truths


@pytest.mark.slow
def test_segment_features_finds_actions_in_precomputed_features(tmp_path: Path, rng: np.random.Generator):
    truths = _feature_dir(tmp_path / "data", rng, fps=15.0)
    r = CliRunner().invoke(cli, ["segment-features", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--fps", "15"])
    assert r.exit_code == 0, r.output
    for name, labels in truths.items():
        ids = (tmp_path / "out" / f"{name}.txt").read_text().split()
        assert len(ids) == len(labels) and all(i.lstrip("-").isdigit() for i in ids)
    ev = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert ev["k"] == 3, ev  # found, not given
    for block in ("per_video", "whole_set"):
        assert ev["ground_truth"][block]["mof"] > 0.9 and ev["ground_truth"][block]["f1@50"] > 0.8, block
    assert "per-video match" in r.output and "whole-set match" in r.output
    fixed = CliRunner().invoke(cli, ["segment-features", str(tmp_path / "data"), "--out", str(tmp_path / "k5"), "--fps", "15", "--k", "5"])
    assert fixed.exit_code == 0, fixed.output
    assert json.loads((tmp_path / "k5" / "eval.json").read_text())["k"] == 5


def test_segment_features_bad_folder_names_the_fix(tmp_path: Path):
    r = CliRunner().invoke(cli, ["segment-features", str(tmp_path), "--out", str(tmp_path / "o"), "--fps", "15"])
    assert r.exit_code != 0 and "features/" in r.output
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "v.npy").write_bytes(b"not numpy")
    r = CliRunner().invoke(cli, ["segment-features", str(tmp_path), "--out", str(tmp_path / "o"), "--fps", "15"])
    assert r.exit_code != 0 and "v.npy" in r.output


def test_parts_from_an_earlier_version_read_with_null_columns(tmp_path: Path):
    """A run written before a column existed (e.g. hand coverage) still resumes and re-evaluates."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from handclust.io.storage import OutputStore

    schema = pa.schema([("segment_id", pa.string()), ("hand_looked", pa.int32())])
    (tmp_path / "segments").mkdir()
    pq.write_table(pa.table({"segment_id": ["a", "b"]}), tmp_path / "segments" / "old.parquet")
    pq.write_table(pa.table({"segment_id": ["c"], "hand_looked": pa.array([3], pa.int32())}), tmp_path / "segments" / "new.parquet")
    t = OutputStore(str(tmp_path)).read_dataset("segments", schema)
    assert t.schema == schema
    assert sorted(zip(t.column("segment_id").to_pylist(), t.column("hand_looked").to_pylist())) == [("a", None), ("b", None), ("c", 3)]
