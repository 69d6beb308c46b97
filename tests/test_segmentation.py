"""Segmentation on piecewise-constant signals with known change points."""

import numpy as np
import pytest

from handclust.config import SegmentConfig
from handclust.core.segmentation import segment_clip, window_novelty

FPS = 5.0


def piecewise(rng: np.random.Generator, lengths_s: list[float], dim: int, noise: float = 0.3):
    """A piecewise-constant signal plus its true change points (frame indices)."""
    blocks, bkps, pos = [], [], 0
    for length in lengths_s:
        n = int(length * FPS)
        blocks.append(rng.normal(0, 1, dim) * 2 + rng.normal(0, noise, (n, dim)))
        pos += n
        bkps.append(pos)
    return np.vstack(blocks), bkps[:-1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_planted_boundaries(seed: int):
    rng = np.random.default_rng(seed)
    lengths = [20, 12, 30, 9, 25]
    motion, truth = piecewise(rng, lengths, 5)
    scene, _ = piecewise(np.random.default_rng(seed + 100), lengths, 16)
    seg = segment_clip(motion, scene, FPS, SegmentConfig(max_segment_s=60))
    found = seg.starts[1:]
    assert len(found) == len(truth)
    assert np.max(np.abs(found - np.array(truth))) <= 2 * FPS  # within 2 s
    # Each boundary remembers which detectors voted; all three see these clean changes.
    assert all(d.count("+") >= 1 for d in seg.detectors[1:])


def test_min_and_max_segment_length():
    rng = np.random.default_rng(0)
    motion = rng.normal(0, 1, (600, 5))  # two minutes of noise, no real change
    scene = rng.normal(0, 1, (600, 8))
    cfg = SegmentConfig(min_segment_s=3, max_segment_s=10)
    seg = segment_clip(motion, scene, FPS, cfg)
    lengths = (seg.ends - seg.starts) / FPS
    assert lengths.min() >= 3 - 1e-9
    assert lengths.max() <= 10 + 1e-9
    assert seg.starts[0] == 0 and seg.ends[-1] == 600
    assert np.all(seg.starts[1:] == seg.ends[:-1])  # a partition: no gaps, no overlaps


def test_tiny_clip_is_one_segment():
    seg = segment_clip(np.zeros((4, 5)), np.zeros((4, 8)), FPS, SegmentConfig())
    assert list(seg.starts) == [0] and list(seg.ends) == [4]


def test_window_novelty_peaks_at_change():
    x = np.vstack([np.zeros((50, 2)), np.ones((50, 2))])
    nov = window_novelty(x, 10)
    assert int(np.argmax(nov)) == 50


def test_boundaries_land_on_the_steps_and_long_stretches_split_where_features_change():
    """Features that step between actions (a model's per-segment scores repeated per frame, as
    real IKEA assembly gives them): each boundary goes to the frame of the step, not a frame or two
    beside it where the detectors' windows put it, and a stretch longer than max_segment_s is cut at
    its steps, not evenly. Footage keeps place=even, the old placement."""
    from handclust.core.segmentation import split_at_changes

    rng = np.random.default_rng(5)
    lengths = [7, 3, 5, 2, 6, 4, 8, 3]  # seconds: steps the detectors see, and steps inside 10 s stretches
    motion, truth = piecewise(rng, lengths, 5, noise=0.0)
    scene, _ = piecewise(np.random.default_rng(6), lengths, 16, noise=0.0)
    cfg = SegmentConfig(min_segment_s=1, max_segment_s=4, place="change")  # the segment-features default
    on_steps = set(segment_clip(motion, scene, FPS, cfg).starts[1:].tolist()) & set(truth)
    even = set(segment_clip(motion, scene, FPS, SegmentConfig(min_segment_s=1, max_segment_s=4)).starts[1:].tolist()) & set(truth)
    assert len(on_steps) >= len(truth) - 1, (sorted(on_steps), truth)
    assert len(on_steps) > len(even)
    # the split itself: 3 pieces of 2..6 frames over 14 frames with steps at 4 and 9 -> cut there
    change = np.zeros(14)
    change[[4, 9]] = 1.0
    assert split_at_changes(change, 3, 2, 6) == [4, 9]
    assert split_at_changes(np.zeros(14), 3, 2, 6) == [5, 9]  # no change at all: even cuts
