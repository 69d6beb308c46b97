"""Anchored hand propagation and ego-compensated hand motion, on generated clips with known motion."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from handclust.config import load_config
from handclust.modalities.features.hands import (
    DETECTED,
    NO_HAND,
    PROPAGATED,
    HandTracks,
    compensated_hand_motion,
    merge_anchor_rows,
    propagate_hands,
    scene_cuts,
)
from handclust.modalities.features.keypoints import HAND_POINTS, HAND_SLOT, POSE_DESCRIPTOR, pose_descriptor
from handclust.modalities.features.motion import MotionFeatures

W, H, FPS = 320, 180, 5.0


def _texture(seed: int, size: int = 900, lo: int = 0, hi: int = 255) -> np.ndarray:
    """Blurred noise: corners everywhere for Lucas-Kanade, grey values in [lo, hi]."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (size, size)).astype(np.float32), (0, 0), 2.0)
    img = (img - img.min()) / (img.max() - img.min())
    return (lo + img * (hi - lo)).astype(np.uint8)


def _camera(k: int, shift: tuple[float, float], turn_deg: float) -> np.ndarray:
    """2x3 map from world (texture) px to frame k's px: the view turns by ``turn_deg`` and pans by
    ``shift`` px per frame, about the frame centre, starting from world (290, 360) at the top left."""
    a = np.deg2rad(turn_deg * k)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    c = np.array([W / 2, H / 2])
    origin = np.array([290.0, 360.0])
    # world point p -> frame: R (p - origin - c) + c - k * shift
    m = np.zeros((2, 3))
    m[:, :2] = r
    m[:, 2] = r @ (-origin - c) + c - k * np.asarray(shift)
    return m


def _render(world: np.ndarray, m: np.ndarray) -> np.ndarray:
    return cv2.warpAffine(world, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _hand_world() -> np.ndarray:
    """21 keypoints of a hand in world px: a wrist and five fingers fanning upwards."""
    wrist = np.array([450.0, 500.0])
    pts = [wrist]
    for f in range(5):
        ang = np.deg2rad(-150 + 30 * f)
        for j in range(1, 5):
            pts.append(wrist + 9 * j * np.array([np.cos(ang), np.sin(ang)]))
    return np.array(pts)


def _row(pts_px: np.ndarray | None, score: float = 0.9, max_hands: int = 2) -> np.ndarray:
    row = np.full(max_hands * HAND_SLOT, np.nan, np.float32)
    row[::HAND_SLOT] = 0.0
    if pts_px is not None:
        p = np.zeros((HAND_POINTS, 3), np.float32)
        p[:, 0], p[:, 1] = pts_px[:, 0] / W, pts_px[:, 1] / H
        row[0], row[1:HAND_SLOT] = score, p.ravel()
    return row


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, ["pose.max_age_frames=10"]).pose


@pytest.mark.parametrize("shift,turn", [((2.0, 1.0), 0.0), ((1.5, -0.5), 0.6)], ids=["pan", "pan+turn"])
def test_planted_hand_is_carried_within_pixels_and_stops_at_a_cut(cfg, shift, turn):
    n, cut = 14, 9
    world, other = _texture(1), _texture(2, lo=0, hi=90)  # the cut shows another, darker scene
    cams = [_camera(k, shift, turn) for k in range(n)]
    grey = np.stack([_render(world if k < cut else other, cams[k]) for k in range(n)])
    truth = np.stack([_apply(c, _hand_world()) for c in cams])  # (n, 21, 2) px
    anchor = 3
    rows = np.stack([_row(truth[k] if k == anchor else None) for k in range(n)])
    out = propagate_hands(grey, rows, cfg)

    src, age = out["hand_source"], out["hand_age"]
    assert src[anchor] == DETECTED and age[anchor, 0] == 0
    carried = [k for k in range(n) if src[k] == PROPAGATED]
    assert carried == [0, 1, 2, 4, 5, 6, 7, 8]  # backward to the clip start, forward up to the cut
    assert (src[cut:] == NO_HAND).all() and np.isnan(out["hand_landmarks"][cut:, 1]).all()
    for k in carried:
        got = out["hand_landmarks"][k, 1:HAND_SLOT].reshape(HAND_POINTS, 3)[:, :2] * [W, H]
        err = np.linalg.norm(got - truth[k], axis=1)
        assert np.median(err) < 1.0 and err.max() < 3.0, (k, err.max())
        assert age[k, 0] == abs(k - anchor) and out["hand_landmarks"][k, 0] == pytest.approx(0.9)
        assert np.isnan(age[k, 1])  # the second slot stays empty
    assert scene_cuts(grey, cfg.cut_min_similarity).tolist() == [k == cut for k in range(n)]


def test_age_cap_written_only_on_looked_frames_and_drift_from_next_anchor(cfg):
    n = 16
    world = _texture(3)
    cams = [_camera(k, (2.0, 0.0), 0.0) for k in range(n)]
    grey = np.stack([_render(world, c) for c in cams])
    truth = np.stack([_apply(c, _hand_world()) for c in cams])
    short = load_config(None, ["pose.max_age_frames=3"]).pose
    looked = np.arange(n) % 2 == 0  # pose.fps half the sampling rate: odd frames tracked through, never written
    rows = np.stack([_row(truth[k] if k == 6 else None) if looked[k] else np.full(2 * HAND_SLOT, np.nan, np.float32)
                     for k in range(n)])
    out = propagate_hands(grey, rows, short)
    assert np.flatnonzero(out["hand_source"] == PROPAGATED).tolist() == [4, 8]  # age <= 3, looked-at only
    assert np.isnan(out["hand_landmarks"][[5, 7], 0]).all()

    # Two anchors 6 frames apart. Where they agree, the frames between are carried from the nearer;
    # where the later detection lies far from where the earlier hand's track arrives, one of them is
    # wrong: neither track is trusted between them, and each still carries outwards.
    rows = np.stack([_row(truth[k] if k in (2, 8) else None) for k in range(n)])
    out = propagate_hands(grey, rows, cfg)
    assert (out["hand_source"][3:8] == PROPAGATED).all()
    assert out["hand_age"][3:8, 0].tolist() == [1, 2, 3, 2, 1]
    rows[8] = _row(truth[8] + [60, 0])
    out = propagate_hands(grey, rows, cfg)
    assert (out["hand_source"][3:8] == NO_HAND).all()
    assert (out["hand_source"][[0, 1, *range(9, n)]] == PROPAGATED).all()
    far = out["hand_landmarks"][10, 1:HAND_SLOT].reshape(HAND_POINTS, 3)[:, :2] * [W, H]
    assert np.median(np.linalg.norm(far - (truth[10] + [60, 0]), axis=1)) < 2.0  # from the later anchor


def test_second_anchor_source_adds_hands_and_merges_the_same_hand():
    a = np.stack([_row(_hand_world() - [300, 400])])
    b = np.stack([_row(_hand_world() - [300, 400] + [1, 0], score=0.7)])  # the same hand, seen by both
    c = np.stack([_row(_hand_world() - [150, 400], score=0.6)])  # another hand, only the second detector
    merged = merge_anchor_rows([a, b], max_hands=2)
    assert (merged.reshape(-1, HAND_SLOT)[:, 0] > 0).sum() == 1 and merged[0, 0] == pytest.approx(0.9)
    merged = merge_anchor_rows([a, c], max_hands=2)
    slots = merged.reshape(2, HAND_SLOT)
    assert slots[0, 0] == pytest.approx(0.9) and slots[1, 0] == pytest.approx(0.6)  # left to right


def _motion_frames(grey: np.ndarray) -> dict[str, np.ndarray]:
    """Ego-motion columns of grey frames, measured by the pipeline's own motion stage."""
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    n = len(rgb)
    batch = {"frame": rgb, "prev_grey": np.concatenate([grey[:1], grey[:-1]]), "has_prev": np.arange(n) > 0,
             "motion_dt": np.where(np.arange(n) > 0, 1 / FPS, np.nan).astype(np.float32)}
    return MotionFeatures(load_config(None, []).flow, FPS)(batch)


def test_hand_fixed_in_the_world_has_no_compensated_motion_while_the_camera_pans_and_turns():
    n = 12
    world = _texture(4)
    cams = [_camera(k, (6.0, 2.0), 0.8) for k in range(n)]
    frames = _motion_frames(np.stack([_render(world, c) for c in cams]))
    wrist = np.array([[450.0, 500.0]])
    rows = np.stack([_row(np.repeat(_apply(c, wrist), HAND_POINTS, axis=0)) for c in cams])
    v = compensated_hand_motion(rows, frames, H / W, FPS)[1:, :2]
    image_speed = np.linalg.norm(np.diff([_apply(c, wrist)[0] for c in cams], axis=0), axis=1) / W * FPS
    assert image_speed.mean() > 0.09  # the head moves the hand ~0.1 frame widths a second in the image
    assert np.linalg.norm(v, axis=1).max() < 0.01  # in the world it stays put


def test_hand_moving_while_the_camera_is_still_keeps_its_planted_speed():
    n = 12
    frames = _motion_frames(np.stack([_render(_texture(5), _camera(0, (0, 0), 0))] * n))
    speed = 0.08  # frame widths per second, to the right
    rows = np.stack([_row(np.repeat([[100 + speed * W / FPS * k, 90]], HAND_POINTS, axis=0)) for k in range(n)])
    v = compensated_hand_motion(rows, frames, H / W, FPS)
    assert np.isnan(v[0]).all() and np.isnan(v[:, 2:]).all()  # nothing before the first frame; slot 2 empty
    np.testing.assert_allclose(v[1:, 0], speed, atol=2e-3)
    np.testing.assert_allclose(v[1:, 1], 0, atol=2e-3)


def test_segment_descriptor_sees_the_hands_rhythm_not_the_heads():
    """A wrist swinging with a 2 s period in the world while the head pans steadily: the compensated
    track has that period; its image track is dominated by the pan."""
    n, period = 60, 2.0
    t = np.arange(n) / FPS
    pan = 0.05  # frame widths per second
    frames = {"ego_tx": np.full(n, pan), "ego_ty": np.zeros(n), "ego_rotation": np.zeros(n), "ego_scale": np.zeros(n),
              "motion_dt": np.where(np.arange(n) > 0, 1 / FPS, np.nan)}
    world_x = 0.5 + 0.1 * np.sin(2 * np.pi * t / period)
    x = world_x + pan * t  # the image moves with the pan
    rows = np.stack([_row(np.repeat([[x[k] * W, 90]], HAND_POINTS, axis=0)) for k in range(n)])
    motion = compensated_hand_motion(rows, frames, H / W, FPS)
    body = np.zeros((n, 0), np.float32)
    d = dict(zip(POSE_DESCRIPTOR, pose_descriptor(rows, body, 0, n, FPS, hand_motion=motion), strict=True))
    assert d["hand_rhythm_period"] == pytest.approx(period, rel=0.15) and d["hand_rhythm_strength"] > 0.3
    true_speed = np.mean(np.abs(np.diff(world_x))) * FPS
    assert d["hand_speed_ego"] == pytest.approx(true_speed, rel=0.05)
    assert d["hand_path_ego"] == pytest.approx(np.abs(np.diff(world_x)).sum(), rel=0.05)
    # Without compensation the descriptor keeps its old image-space speed and leaves these at 0.
    plain = dict(zip(POSE_DESCRIPTOR, pose_descriptor(rows, body, 0, n, FPS), strict=True))
    assert plain["hand_speed_ego"] == 0 and plain["hand_speed"] > 0


def test_clip_pass_reads_only_frames_near_anchors_and_marks_rows(cfg):
    n = 40
    world = _texture(6)
    cams = [_camera(k, (1.0, 0.0), 0.0) for k in range(n)]
    grey = np.stack([_render(world, c) for c in cams])
    truth = np.stack([_apply(c, _hand_world()) for c in cams])
    rows = np.stack([_row(truth[k] if k in (5, 30) else None) for k in range(n)])
    frames = {"frame_idx": np.arange(n), "hand_landmarks": rows, **_motion_frames(grey)}
    asked: list[np.ndarray] = []

    def read(needed: np.ndarray):
        asked.append(needed.copy())
        return ((int(k), grey[k]) for k in np.flatnonzero(needed))

    stage = HandTracks(cfg, FPS, W, 64)
    out = stage(frames, "planted.mp4", (H, W), read_grey=read)
    assert np.flatnonzero(asked[0]).tolist() == list(range(0, 16)) + list(range(20, 40))  # within 10 of an anchor
    assert (out["hand_source"][[5, 30]] == DETECTED).all()
    assert (out["hand_source"][list(range(0, 5)) + list(range(6, 16)) + list(range(20, 30))] == PROPAGATED).all()
    assert (out["hand_source"][16:20] == NO_HAND).all()
    # The world-fixed hand carried by the camera: compensated wrist motion stays near zero.
    v = out["hand_motion"][:, :2]
    assert np.nanmax(np.linalg.norm(v, axis=1)) < 0.01
    off = load_config(None, ["pose.propagate=false"]).pose
    plain = HandTracks(off, FPS, W, 64)(frames, "planted.mp4", (H, W), read_grey=read)
    assert len(asked) == 1 and (plain["hand_source"] == DETECTED).sum() == 2  # no propagation, no re-decode


def _clip_file(path, n: int, seed: int, shift: tuple[float, float], turn: float):
    """A clip of ``n`` frames of a textured world under a moving camera, written to ``path``; its
    source and the RGB frames the first pass decodes from it."""
    from handclust.io.video import open_video
    from handclust.pipeline import frame_batches
    from handclust.synthetic.footage_v1 import Mp4Writer

    world = cv2.cvtColor(_texture(seed), cv2.COLOR_GRAY2RGB)
    with Mp4Writer(path, FPS, (W, H)) as out:
        for k in range(n):
            out.write(_render(world, _camera(k, shift, turn)))
    source = open_video(path, FPS, W, 8, "pyav")

    class _Clip:
        clip_id = path.stem

    batches = frame_batches(_Clip(), load_config(None, []), source)  # type: ignore[arg-type]
    return source, np.concatenate([b["frame"] for b in batches])


def test_clip_pass_re_decodes_the_frames_the_first_pass_saw(cfg, tmp_path):
    """In a run the pass re-decodes the file (frames are never kept): same backend, rate and size
    as the first pass, so the frames it tracks on are the ones the detector saw."""
    path = tmp_path / "planted.mp4"
    source, rgb = _clip_file(path, 30, 7, (2.0, 1.0), 0.3)
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb])
    truth = np.stack([_apply(_camera(k, (2.0, 1.0), 0.3), _hand_world()) for k in range(len(grey))])
    rows = np.stack([_row(truth[k] if k == 12 else None) for k in range(len(grey))])
    frames = {"frame_idx": np.arange(len(grey)), "hand_landmarks": rows, **_motion_frames(grey)}
    stage = HandTracks(cfg, FPS, W, 8)
    decoded = stage(frames, str(path), (H, W), backend=source.backend)
    in_memory = stage(frames, str(path), (H, W), read_grey=lambda m: ((int(k), grey[k]) for k in np.flatnonzero(m)))
    for k in ("hand_landmarks", "hand_source", "hand_age", "hand_motion"):
        np.testing.assert_array_equal(decoded[k], in_memory[k], err_msg=k)
    assert (decoded["hand_source"][[*range(2, 12), *range(13, 23)]] == PROPAGATED).all()


def test_hand_model_looks_densely_only_around_a_found_hand(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """pose.idle_fps: the frame stage looked every 10th frame; where it found a hand (frame 10) the
    clip pass re-decodes the pose.fps frames within 10 of it and runs the hand model on them, and
    nowhere else. The frames it gets are the ones the first pass decoded; one re-decode serves the
    dense looks and the propagation of the hands they find."""
    import handclust.io.video
    from handclust.modalities.features.hands import hand_coverage

    pose = load_config(None, []).pose  # pose.fps 2.5, idle_fps 0.5: steps 2 and 10 at 5 fps
    n, path = 40, tmp_path / "idle.mp4"
    source, rgb = _clip_file(path, n, 8, (2.0, 0.0), 0.0)
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb])
    truth = np.stack([_apply(_camera(k, (2.0, 0.0), 0.0), _hand_world()) for k in range(n)])
    rows = np.full((n, 2 * HAND_SLOT), np.nan, np.float32)
    for k in range(0, n, 10):  # what the frame stage looked at: a hand on frame 10 only
        rows[k] = _row(truth[k] if k == 10 else None)
    asked: list[np.ndarray] = []

    def model(imgs: list[np.ndarray]) -> np.ndarray:
        # The hand model finds the hand again on frame 14 only (as a detector misses most frames).
        found = [next((k for k in range(n) if np.array_equal(img, rgb[k])), -1) == 14 for img in imgs]
        asked.extend(imgs)
        return np.stack([_row(truth[14] if f else None) for f in found])

    opened: list[str] = []
    real_open = handclust.io.video.open_video
    monkeypatch.setattr(handclust.io.video, "open_video", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k))
    stage = HandTracks(pose, FPS, W, 8, hand_model=model)
    frames = {"frame_idx": np.arange(n), "hand_landmarks": rows, **_motion_frames(grey)}
    out = stage(frames, str(path), (H, W), backend=source.backend)
    dense = [2, 4, 6, 8, 12, 14, 16, 18]
    assert len(asked) == len(dense) and opened == [str(path)]  # one re-decode for looks and propagation
    for img, k in zip(asked, dense):
        np.testing.assert_array_equal(img, rgb[k])
    looked = ~np.isnan(out["hand_landmarks"][:, 0])
    assert np.flatnonzero(looked).tolist() == sorted([0, 10, 20, 30, *dense])
    assert out["hand_source"][[10, 14]].tolist() == [DETECTED, DETECTED]
    # Missed looks next to them carry the hand (Lucas-Kanade), within pixels of where it is.
    for k in (12, 16, 18):
        assert out["hand_source"][k] == PROPAGATED, k
        got = out["hand_landmarks"][k, 1:HAND_SLOT].reshape(HAND_POINTS, 3)[:, :2] * [W, H]
        assert np.median(np.linalg.norm(got - truth[k], axis=1)) < 1.5, k
    cov = hand_coverage(out, pose.fps, FPS, stage.idle_step)
    assert cov["looked"] == 12 and cov["idle_looks"] == 4 and cov["idle_coverage"] == pytest.approx(0.25)
    assert cov["detected"] == 2
    # No hand found on the idle looks: the hand model is never run and nothing is re-decoded.
    rows[10] = _row(None)
    asked.clear()
    opened.clear()
    quiet = stage({**frames, "hand_landmarks": rows}, "/nonexistent.mp4", (H, W))
    assert not asked and not opened
    assert np.flatnonzero(~np.isnan(quiet["hand_landmarks"][:, 0])).tolist() == [0, 10, 20, 30]
