"""Low-frame-rate and held-frame sources: motion between distinct frames, at the right time step.

Real helmet footage came as a frame every 2 s, also re-encoded at 30 fps by repeating each image.
Sampled at 5 fps, flow was 0 on 9 of 10 frames with a spike every 2 s, and the flow rhythm
reported the 2 s hold. These clips pan a texture at a known speed, so the truth is exact.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from handclust.core.held import HELD_MAX_DIFF, HeldFrameTracker, fill_held, frame_difference, held_signature, is_fresh

W, H = 320, 180
SPEED = 20.0  # px/s the scene pans left
HOLD_S = 2.0  # the held source shows a new image every 2 s
DURATION_S = 24.0


def _texture(width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((H, width), np.float32)
    for s in (3, 12, 40):
        small = rng.standard_normal((max(2, H // s), max(2, width // s))).astype(np.float32)
        out += cv2.resize(small, (width, H), interpolation=cv2.INTER_CUBIC)
    return np.repeat(np.clip(128 + 30 * out, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


TEXTURE = _texture(W + int(SPEED * DURATION_S) + 8)


def _view(t: float) -> np.ndarray:
    """The camera's image at time ``t``: the texture panned by ``SPEED * t`` pixels (sub-pixel exact)."""
    m = np.float32([[1, 0, -SPEED * t], [0, 1, 0]])
    return cv2.warpAffine(TEXTURE, m, (W, H), flags=cv2.INTER_LINEAR)


def _write(path: Path, rate: int | Fraction, image_at) -> Path:
    """H.264 at ``rate`` frames per second (a Fraction for rates below 1), ``DURATION_S`` long."""
    import av

    n = int(round(DURATION_S * rate))
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for k in range(n):
            frame = av.VideoFrame.from_ndarray(image_at(float(k / rate)), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("held")
    return {
        "smooth": _write(d / "smooth_15fps.mp4", 15, _view),
        # 0.5 fps content re-encoded at 15 fps by repeating each image for 2 s.
        "held": _write(d / "held_15fps.mp4", 15, lambda t: _view(HOLD_S * np.floor(t / HOLD_S + 1e-9))),
        # A true 0.5 fps source: one frame every 2 s in the file.
        "slow": _write(d / "slow_0.5fps.mp4", Fraction(1, 2), _view),
    }


def _run(path: Path, out: Path, chunk_frames: int = 64) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """One clip through the local runner: its frames and segments tables and its status."""
    from handclust.config import RunConfig, with_overrides
    from handclust.io.footage import find_clips
    from handclust.io.storage import OutputStore
    from handclust.pipeline import LocalRunner
    from handclust.progress import Progress

    cfg = with_overrides(RunConfig(), [f"decode.chunk_frames={chunk_frames}", "runner=local"])
    store = OutputStore(out)
    (clip,) = find_clips([path], cfg.phase.pattern)
    status = LocalRunner(cfg, store, Progress(enabled=False)).process_clip(clip)
    frames = store.read_table(f"frames/{clip.clip_id}.parquet").to_pandas()
    segments = store.read_table(f"segments/{clip.clip_id}.parquet").to_pandas()
    return frames, segments, status


def _measured_speed(frames: pd.DataFrame) -> np.ndarray:
    """Head translation speed in px/s on the frames with a measurement (ego_tx is in frame widths/s)."""
    m = frames[frames.motion_dt.notna()]
    return np.hypot(m.ego_tx, m.ego_ty).to_numpy() * W


# ----------------------------------------------------------------------------- the rule, on arrays


def test_freshness_rule_on_arrays() -> None:
    rng = np.random.default_rng(0)
    img = _view(0.0)
    sig = held_signature(img)
    assert sig.shape == (45, 80)
    assert is_fresh(sig, None)  # a clip's first frame is new
    assert not is_fresh(held_signature(img.copy()), sig)  # an exact repeat is held
    # Encoder-like noise well under the threshold: held. One grey level everywhere: new.
    noisy = np.clip(img.astype(np.int16) + rng.choice([-1, 0, 0, 0, 0, 0, 0, 0, 0, 1], img.shape), 0, 255).astype(np.uint8)
    assert frame_difference(held_signature(noisy), sig) < HELD_MAX_DIFF
    assert not is_fresh(held_signature(noisy), sig)
    assert is_fresh(held_signature(np.clip(img.astype(np.int16) + 1, 0, 255).astype(np.uint8)), sig)
    # Half a pixel of pan is new.
    assert is_fresh(held_signature(_view(0.5 / SPEED)), sig)
    # A different size is always new.
    assert is_fresh(held_signature(cv2.resize(img, (160, 90))), sig)


def test_tracker_compares_with_the_last_distinct_frame() -> None:
    tracker = HeldFrameTracker()
    a, b = _view(0.0), _view(1.0)
    fresh, prev, dt = tracker.step(a, 0.0)
    assert fresh and prev is None and np.isnan(dt)
    for t in (0.2, 0.4, 0.6):
        fresh, prev, dt = tracker.step(a, t)
        assert not fresh and prev is None and np.isnan(dt)
    fresh, prev, dt = tracker.step(b, 0.8)
    # The previous distinct frame comes back in grey, what optical flow compares.
    assert fresh and prev is not None and np.array_equal(prev, cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)) and dt == pytest.approx(0.8)


def test_fill_held_takes_the_next_measurement() -> None:
    x = np.array([np.nan, 1.0, np.nan, np.nan, 4.0, np.nan])
    np.testing.assert_array_equal(fill_held(x), [1.0, 1.0, 4.0, 4.0, 4.0, 4.0])
    np.testing.assert_array_equal(fill_held(np.full((3, 2), np.nan)), np.zeros((3, 2)))


# ----------------------------------------------------------------------------- real files


@pytest.mark.slow
def test_smooth_source_measures_the_pan_speed(clips: dict[str, Path], tmp_path: Path) -> None:
    frames, segments, status = _run(clips["smooth"], tmp_path)
    assert frames.fresh.all()
    assert np.isnan(frames.motion_dt.iloc[0]) and frames.motion_dt.iloc[1:].to_numpy() == pytest.approx(0.2)
    speed = _measured_speed(frames)
    assert np.median(speed) == pytest.approx(SPEED, rel=0.1)
    assert status["effective_fps"] == pytest.approx(5.0)
    assert not any(len(u) for u in segments.unmeasured)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["held", "slow"])
def test_held_source_measures_between_distinct_frames(name: str, clips: dict[str, Path], tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    frames, segments, status = _run(clips[name], tmp_path)
    # One new image per 2 s: 1 in 10 frames sampled at 5 fps.
    assert frames.fresh.sum() == pytest.approx(len(frames) / 10, abs=1)
    dt = frames.motion_dt.dropna().to_numpy()
    # Measured over the 2 s between distinct images. (x264's keyframe at frame 250 re-quantises one held
    # image, 0.9 grey levels: taken as new, it splits one 2 s step in two; see features/held.py.)
    assert np.mean(np.abs(dt - HOLD_S) < 0.01) >= 0.8 and dt.min() > 0.5
    # Held frames carry no measurement, not zero motion.
    assert frames.loc[~frames.fresh, ["flow_mag_mean", "ego_tx"]].isna().all().all()
    # The speed between distinct frames is the pan speed: not 10x (per sample period), not 0.
    assert np.median(_measured_speed(frames)) == pytest.approx(SPEED, rel=0.1)
    # Rhythm cannot be measured at 0.5 distinct frames per second: it must not report the hold.
    assert all("rhythm" in u for u in segments.unmeasured)
    assert segments.rhythm_period_s.isna().all() and segments.repetition_period_s.isna().all()
    assert not np.any(np.stack(segments.desc_rhythm.to_numpy()))
    assert status["effective_fps"] == pytest.approx(0.5, abs=0.06)
    assert status["unmeasured"]["rhythm"] == len(segments)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "distinct frames per second" in r.getMessage()]
    assert warned and clips[name].name in warned[0] and "rhythm" in warned[0]


@pytest.mark.slow
def test_frames_do_not_depend_on_chunking(clips: dict[str, Path], tmp_path: Path) -> None:
    small, _, _ = _run(clips["held"], tmp_path / "a", chunk_frames=4)
    large, _, _ = _run(clips["held"], tmp_path / "b", chunk_frames=64)
    pd.testing.assert_frame_equal(small, large)
