"""Hand and body keypoints (MediaPipe), their segment summary, and how fusion weighs a modality
that most segments never observe."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from handclust import schema
from handclust.config import load_config
from handclust.core.clustering import fuse
from handclust.modalities.features.keypoints import (
    BODY_WIDTH,
    HAND_POINTS,
    HAND_SLOT,
    POSE_DESCRIPTOR,
    HandPoseKeypoints,
    KeypointModelError,
    keypoints_per_activity,
    pose_descriptor,
)

# MediaPipe is part of the default pipeline (`make` installs it): a missing install must fail
# here, never be skipped.


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    """A real photo of a person (shipped with matplotlib), 320 px wide, RGB."""
    import cv2
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return cv2.resize(img, (320, round(img.shape[0] * 320 / img.shape[1])))


def _batch(frames: np.ndarray, start: int = 0) -> dict[str, np.ndarray]:
    return {"frame": frames, "frame_idx": np.arange(start, start + len(frames), dtype=np.int32)}


def test_body_keypoints_found_on_a_real_photo_and_batching_changes_nothing(portrait: np.ndarray):
    cfg = load_config(None, ["pose.fps=5", "pose.idle_fps=null"]).pose
    stage = HandPoseKeypoints(cfg, sample_fps=5.0)
    frames = np.stack([portrait, portrait[:, ::-1], portrait, np.zeros_like(portrait)])
    out = stage(_batch(frames))
    body = out["body_landmarks"]
    assert body.shape == (4, BODY_WIDTH) and out["hand_landmarks"].shape == (4, 2 * HAND_SLOT)
    # The portrait: a person facing the camera, nose in the upper middle, their left shoulder
    # on the image's right. Mirrored, the nose moves to the mirrored x. A black frame shows nobody.
    pts = body[0, 1:].reshape(33, 4)
    assert body[0, 0] == 1.0
    assert 0.35 < pts[0, 0] < 0.7 and pts[0, 1] < 0.55
    assert pts[11, 0] > pts[0, 0] > pts[12, 0]
    assert pts[[0, 11, 12], 3].min() > 0.5  # visible
    mirrored = body[1, 1:].reshape(33, 4)
    assert mirrored[0, 0] == pytest.approx(1 - pts[0, 0], abs=0.03)
    assert body[3, 0] == 0.0 and np.isnan(body[3, 1:]).all()
    # No hands in view: every slot looked at (score 0), no coordinates invented.
    hands = out["hand_landmarks"].reshape(4, 2, HAND_SLOT)
    assert (hands[:, :, 0] == 0).all() and np.isnan(hands[:, :, 1:]).all()
    # The same frames one at a time give the same rows (static-image mode: no tracking state).
    one_by_one = np.concatenate([stage(_batch(frames[i : i + 1], i))["body_landmarks"] for i in range(4)])
    np.testing.assert_allclose(one_by_one, body, atol=1e-6)


def test_body_beside_hands_in_a_thread_gives_the_same_rows(portrait: np.ndarray, monkeypatch: pytest.MonkeyPatch):
    """With 2 threads allowed the body model runs beside the hand model; held to 1 (a Ray actor's
    limit) they run in turn: the rows are the same either way."""
    stage = HandPoseKeypoints(load_config(None, ["pose.fps=5", "pose.idle_fps=null"]).pose, sample_fps=5.0)
    frames = np.stack([portrait, portrait[:, ::-1], np.zeros_like(portrait), portrait])
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    both = stage(_batch(frames))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    alone = stage(_batch(frames))
    assert both["body_landmarks"][[0, 1, 3], 0].tolist() == [1.0, 1.0, 1.0]  # the person found beside the hand model
    for col in ("hand_landmarks", "body_landmarks"):
        np.testing.assert_allclose(both[col], alone[col], atol=1e-6, err_msg=col)


def test_frames_between_looks_are_not_looked_at(portrait: np.ndarray):
    cfg = load_config(None, ["pose.fps=2.5", "pose.idle_fps=null"]).pose  # every 2nd frame at 5 fps sampling
    out = HandPoseKeypoints(cfg, sample_fps=5.0)(_batch(np.stack([portrait] * 4), start=10))
    looked = ~np.isnan(out["body_landmarks"][:, 0])
    assert looked.tolist() == [True, False, True, False]
    assert np.isnan(out["hand_landmarks"][1]).all()


def test_by_default_the_frame_stage_looks_at_the_idle_rate(portrait: np.ndarray):
    """pose.idle_fps 0.5 at 5 fps sampling: every 10th frame, hands and body; the hand pass adds the
    pose.fps looks around found hands (tests/test_hands.py)."""
    cfg = load_config(None, []).pose
    stage = HandPoseKeypoints(cfg, sample_fps=5.0)
    assert (stage.step, stage.idle_step) == (2, 10)
    out = stage(_batch(np.stack([portrait] * 12), start=8))
    for col in ("body_landmarks", "hand_landmarks"):
        assert (~np.isnan(out[col][:, 0])).tolist() == [i in (10, 20) for i in range(8, 20)], col
    assert out["body_landmarks"][2, 0] == 1.0  # frame 10: the person found


def _hand_frames(n: int, present: list[int], x0: float, dx: float) -> np.ndarray:
    """``(n, 2 * HAND_SLOT)``: one flat hand in slot 0 on ``present`` frames, wrist moving by ``dx`` per frame."""
    rows = np.full((n, 2 * HAND_SLOT), np.nan, np.float32)
    rows[:, 0] = rows[:, HAND_SLOT] = 0.0
    for i in present:
        pts = np.zeros((HAND_POINTS, 3), np.float32)
        pts[:, 0] = x0 + dx * i
        pts[:, 1] = 0.6 - 0.01 * np.arange(HAND_POINTS)  # fingers point up, away from the wrist
        rows[i, 0] = 0.9
        rows[i, 1:HAND_SLOT] = pts.ravel()
    return rows


def test_pose_descriptor_from_planted_keypoints():
    fps = 5.0
    hands = _hand_frames(10, present=[0, 1, 2, 3, 4], x0=0.3, dx=0.02)
    body = np.zeros((10, 0), np.float32)  # body off
    d = dict(zip(POSE_DESCRIPTOR, pose_descriptor(hands, body, 0, 10, fps), strict=True))
    assert d["observed_rate"] == pytest.approx(0.5) and d["hand_rate"] == pytest.approx(0.5)
    assert d["two_hand_rate"] == 0.0
    assert d["hand_x"] == pytest.approx(0.34 - 0.5, abs=1e-6)  # mean wrist x 0.34, centred
    assert d["hand_speed"] == pytest.approx(0.02 * fps, rel=1e-4)  # frame widths per second
    assert d["hand_openness"] > 0 and d["body_rate"] == 0.0
    # A segment in which nothing was seen is the neutral all-zero point; so is one never looked at.
    assert not pose_descriptor(hands, body, 5, 10, fps).any()
    assert not pose_descriptor(np.full((10, 2 * HAND_SLOT), np.nan), body, 0, 10, fps).any()

    # Per activity: duration-weighted hand rate; noise (-1) is not an activity.
    desc = np.stack([pose_descriptor(hands, body, 0, 10, fps), pose_descriptor(hands, body, 5, 10, fps),
                     pose_descriptor(hands, body, 0, 5, fps)])
    kp = keypoints_per_activity(desc, np.array([10.0, 30.0, 5.0]), np.array([0, 0, -1]))
    assert kp == {0: {"hand_rate": pytest.approx(0.125), "body_rate": 0.0}}


def test_fusion_gives_no_weight_to_a_modality_no_segment_observed(rng: np.random.Generator):
    cfg = load_config(None, []).cluster
    centres = rng.normal(size=(3, 16)) * 4
    motion = np.concatenate([c + rng.normal(size=(30, 16)) for c in centres])
    clip_ids = np.array([f"c{i % 5}" for i in range(len(motion))], dtype=object)
    unseen = np.zeros((len(motion), len(POSE_DESCRIPTOR)), np.float32)
    with_pose = fuse({"motion": motion, "pose": unseen}, clip_ids, cfg)
    alone = fuse({"motion": motion}, clip_ids, cfg)
    assert with_pose.scores["pose"].weight == 0.0 and with_pose.scores["pose"].coverage == 0.0
    np.testing.assert_allclose(with_pose.fused[:, : alone.fused.shape[1]], alone.fused, atol=1e-6)

    # Seen in a third of the segments, informative there: weighted, but by that third only.
    seen = unseen.copy()
    idx = np.arange(0, len(motion), 3)
    seen[idx, 0] = 1.0
    seen[idx, 1:] = np.repeat(rng.normal(size=(3, len(POSE_DESCRIPTOR) - 1)) * 3, 30, axis=0)[idx] + 0.1 * rng.normal(size=(len(idx), len(POSE_DESCRIPTOR) - 1))
    f = fuse({"motion": motion, "pose": seen}, clip_ids, cfg)
    assert f.scores["pose"].coverage == pytest.approx(len(idx) / len(motion))
    assert 0 < f.scores["pose"].weight < f.scores["motion"].weight
    unseen_rows = np.setdiff1d(np.arange(len(motion)), idx)
    assert not f.transforms["pose"](seen, clip_ids)[unseen_rows].any()  # no position in the pose space


def test_missing_mediapipe_stops_the_run_before_any_clip(short_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from click.testing import CliRunner

    from handclust import discover
    from handclust.cli import cli

    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import mediapipe -> ImportError
    out = tmp_path / "out"
    with pytest.raises(KeypointModelError, match=r"mediapipe==0\.10\.14.*pose\.enabled=false"):
        discover([short_clip], out=out, progress=False, overrides=["runner=local"])
    assert not (out / "frames").exists()
    failed = json.loads((out / "run.json").read_text())  # the run's outputs say why it stopped
    assert failed["status"] == "failed" and "pose.enabled=false" in failed["error"]
    r = CliRunner().invoke(cli, ["run", str(short_clip), "--out", str(out), "--no-progress", "--set", "runner=local"])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "pose.enabled=false" in r.output
    # The way out the message names works.
    res = discover([short_clip], out=out, progress=False, overrides=["runner=local", "pose.enabled=false", "report.enabled=false"])
    assert res.summary["clips_ok"] == 1
    assert schema.vectors(res.segments, "desc_pose").shape[1] == 0
    assert json.loads((out / "run.json").read_text())["status"] == "ok"
    # A later failed attempt into the same folder says so without hiding which config made its tables.
    with pytest.raises(KeypointModelError):
        discover([short_clip], out=out, progress=False, overrides=["runner=local"])
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed" and run["config"]["pose"]["enabled"] is False
    assert run["failed_attempt"]["config"]["pose"]["enabled"] is True and run["summary"]["clips_ok"] == 1


def test_run_records_keypoints_per_frame_and_pose_per_segment(demo_run):
    frames = demo_run.frames()
    hands, body = schema.vectors(frames, "hand_landmarks"), schema.vectors(frames, "body_landmarks")
    assert hands.shape == (frames.num_rows, 2 * HAND_SLOT) and body.shape == (frames.num_rows, BODY_WIDTH)
    looked = ~np.isnan(body[:, 0])
    # pose.idle_fps 0.5 of 5 sampled per second; MediaPipe finds no hand on the synthetic gloves,
    # so the hand model looked nowhere else either.
    assert looked.tolist() == (frames.column("frame_idx").to_numpy() % 10 == 0).tolist()
    np.testing.assert_array_equal(~np.isnan(hands[:, 0]), looked)
    desc = schema.vectors(demo_run.segments, "desc_pose")
    assert desc.shape == (demo_run.segments.num_rows, len(POSE_DESCRIPTOR))
    run = json.loads((Path(demo_run.out) / "run.json").read_text())
    assert run["encoders"]["pose"]["encoder"] == "mediapipe" and run["encoders"]["pose"]["version"].startswith("0.10.")
    # run.json says the rates keypoints really ran at: every 10th of the 5 sampled frames a second,
    # every 2nd near a found hand.
    assert run["encoders"]["pose"]["every_nth_frame"] == 2 and run["encoders"]["pose"]["frames_per_s"] == 2.5
    assert run["encoders"]["pose"]["idle_every_nth_frame"] == 10 and run["encoders"]["pose"]["idle_frames_per_s"] == 0.5
    assert "within 10 frames of a found hand" in run["encoders"]["pose"]["looks"]
    pose = run["clustering"]["modality_scores"]["pose"]
    weight = run["clustering"]["fusion_weights"]["pose"]
    observed = float((desc[:, 0] > 0).mean())
    assert pose["coverage"] == pytest.approx(observed)
    assert (weight == 0) == (observed == 0)
    # Per activity in eval.json and in the report's activities table.
    ev = json.loads((Path(demo_run.out) / "eval.json").read_text())
    activities = {str(c) for c in demo_run.clusters.column("cluster").to_pylist() if c >= 0}
    assert set(ev["keypoints"]) == activities
    assert all(0 <= v["hand_rate"] <= 1 and 0 <= v["body_rate"] <= 1 for v in ev["keypoints"].values())
    html = (Path(demo_run.out) / "report" / "index.html").read_text()
    assert "hands seen" in html

    # Anchored propagation: every row says whether its hands were detected or propagated, and how far
    # from their anchor; coverage before / after per clip in eval.json and the report.
    src = np.asarray(frames.column("hand_source"))
    age = schema.vectors(frames, "hand_age")
    assert age.shape == (frames.num_rows, 2) and schema.vectors(frames, "hand_motion").shape == (frames.num_rows, 4)
    slots = hands.reshape(-1, 2, HAND_SLOT)
    has_hand = (np.nan_to_num(slots[:, :, 0]) > 0).any(axis=1)
    assert (src > 0).tolist() == has_hand.tolist()  # a hand on the row <=> detected or propagated
    assert (np.nan_to_num(age[src == 1], nan=1).min(axis=1) == 0).all()  # detected rows hold an age-0 hand
    assert (age[src == 2] > 0).any(axis=1).all() and np.nanmax(age, initial=0) <= 10  # pose.max_age_frames
    assert not (src[~looked] > 0).any()  # written only on frames the detector looked at
    seg = demo_run.segments
    looked_n, det, prop = (np.asarray(seg.column(c)) for c in ("hand_looked", "hand_detected", "hand_propagated"))
    assert looked_n.sum() == looked.sum() and det.sum() == (src == 1).sum() and prop.sum() == (src == 2).sum()
    per_clip = ev["hands"]["per_clip"]
    assert set(per_clip) == set(seg.column("clip_id").to_pylist())
    for v in per_clip.values():
        assert 0 <= v["coverage_before"] <= v["coverage_after"] <= 1
    total = ev["hands"]["total"]
    assert total["coverage_after"] == pytest.approx((det.sum() + prop.sum()) / looked_n.sum(), abs=1e-4)
    assert all("propagated_share" in v for v in ev["keypoints"].values())
    assert 'id="hand-coverage"' in html and "propagated" in html


def test_the_hand_pass_runs_mediapipe_itself_for_its_dense_looks(portrait: np.ndarray):
    """The dense looks around a found hand use the real hand model (built on first use, body off)."""
    from handclust.modalities.features.hands import HandTracks

    stage = HandTracks(load_config(None, []).pose, 5.0, 320, 8)
    rows = stage.hand_model()([portrait, np.zeros_like(portrait)])
    assert rows.shape == (2, 2 * HAND_SLOT)
    assert (rows[:, ::HAND_SLOT] == 0).all() and np.isnan(rows[:, 1:HAND_SLOT]).all()  # looked at, no hand
