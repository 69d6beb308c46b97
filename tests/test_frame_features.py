"""Per-frame features: the fast scene encoder gives the plain per-cell computation's vectors; the flow grid
is the mean flow per cell, in frame widths per second."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def reference_scene_vector(frame: np.ndarray, pyramid_levels: int, color_bins: int, orientation_bins: int) -> np.ndarray:
    """The descriptor as first written: one pass per pyramid cell (the definition the encoder keeps)."""
    import cv2

    sat_bins = 3
    img = frame.astype(np.float32)
    img *= img.mean() / np.maximum(img.reshape(-1, 3).mean(axis=0), 1.0)  # grey world
    img8 = np.clip(img, 0, 255).astype(np.uint8)
    hsv = cv2.cvtColor(img8, cv2.COLOR_RGB2HSV)
    hue = (hsv[..., 0].astype(np.int32) * color_bins // 180).clip(0, color_bins - 1)
    sat = (hsv[..., 1].astype(np.int32) * sat_bins // 256).clip(0, sat_bins - 1)
    colour_code = hue * sat_bins + sat
    grey = cv2.cvtColor(img8, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.sqrt(gx * gx + gy * gy)
    ori = ((np.arctan2(gy, gx) % np.pi) / np.pi * orientation_bins).astype(np.int32).clip(0, orientation_bins - 1)
    parts = []
    h, w = grey.shape
    for level in range(pyramid_levels):
        k = 2**level
        for r in range(k):
            for c in range(k):
                sl = (slice(r * h // k, (r + 1) * h // k), slice(c * w // k, (c + 1) * w // k))
                ch = np.bincount(colour_code[sl].ravel(), minlength=color_bins * sat_bins).astype(np.float32)
                oh = np.bincount(ori[sl].ravel(), weights=mag[sl].ravel(), minlength=orientation_bins)
                edge = float((mag[sl] > 40).mean())
                parts += [ch / max(ch.sum(), 1.0), oh / max(oh.sum(), 1e-6), np.array([edge])]
    v = np.sqrt(np.concatenate(parts).astype(np.float32))
    return v / max(float(np.linalg.norm(v)), 1e-6)


@pytest.mark.parametrize("levels,colours,orientations,width", [(2, 6, 8, 320), (1, 6, 8, 320), (3, 8, 12, 250)])
def test_scene_vectors_match_the_per_cell_definition(short_clip: Path, levels, colours, orientations, width):
    from handclust.config import load_config
    from handclust.io.video import open_video
    from handclust.modalities.features.scene import HistogramSceneEncoder, scene_dim

    cfg = load_config(None, [f"scene.pyramid_levels={levels}", f"scene.color_bins={colours}",
                             f"scene.orientation_bins={orientations}"]).scene
    frames = np.concatenate([c.frames for c in open_video(short_clip, 2.0, width, 64).chunks()])
    # Decoded frames, their odd-sized crops (cell borders that do not divide evenly), a flat grey frame
    # (no gradient, no colour) and a black one (grey world's guard against dividing by 0).
    cases = [*frames, *(f[1:-2, 3:] for f in frames[:3]), np.full_like(frames[0], 128), np.zeros_like(frames[0])]
    enc = HistogramSceneEncoder(cfg)
    enc.setup()
    for f in cases:
        got = enc.encode(np.ascontiguousarray(f))
        assert got.shape == (scene_dim(cfg),) and got.dtype == np.float32
        np.testing.assert_allclose(got, reference_scene_vector(f, levels, colours, orientations), atol=2e-6)


def test_flow_grid_is_the_mean_flow_per_cell_in_frame_widths_per_second(short_clip: Path):
    import cv2

    from handclust.config import load_config
    from handclust.io.video import open_video
    from handclust.modalities.features.motion import MotionFeatures

    cfg = load_config(None, [])
    frames = next(open_video(short_clip, 5.0, 321, 64).chunks()).frames  # odd width: the grid drops the last column
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames[:6]]
    # A known camera pan: the next frame is this one shifted 4 px right (zero flow would test nothing).
    shifted = np.roll(frames[2], 4, axis=1)
    batch = {"frame": np.stack([frames[1], frames[2], shifted]), "prev_grey": np.stack([grey[0], grey[1], grey[2]]),
             "has_prev": np.array([True, True, True]), "motion_dt": np.array([0.2, 0.2, 0.4], np.float32)}
    stage = MotionFeatures(cfg.flow, 5.0)
    stage.setup()
    out = stage(batch)
    g = cfg.flow.grid
    for i in range(3):
        flow = stage._dis.calc(np.ascontiguousarray(batch["prev_grey"][i]), cv2.cvtColor(batch["frame"][i], cv2.COLOR_RGB2GRAY), None)
        h, w = flow.shape[:2]
        ref = flow[: h - h % g, : w - w % g].reshape(g, h // g, g, w // g, 2).mean(axis=(1, 3)).astype(np.float64)
        ref /= float(batch["motion_dt"][i]) * w
        np.testing.assert_allclose(out["flow_grid"][i], ref.ravel(), rtol=1e-5, atol=1e-7)
    # 4 px right over 0.4 s in a frame of w px: x speed 4 / (0.4 w) frame widths per second in the middle cells.
    w = frames.shape[2]
    middle = out["flow_grid"][2].reshape(g, g, 2)[1:-1, 1:-1]
    np.testing.assert_allclose(np.median(middle[..., 0]), 4 / (0.4 * w), rtol=0.25)
    assert abs(np.median(middle[..., 1])) < 0.5 / (0.4 * w)
