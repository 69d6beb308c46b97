"""Signals with known answers: the period of a sinusoid, the repetition period of a periodic
embedding, the ego-motion of a known image shift. Each number here is one a user reads in
segments.parquet (rhythm_period_s, repetition_period_s, ego_tx / ego_ty)."""

import numpy as np
import pytest

from handclust.config import DescriptorConfig, FlowConfig
from handclust.core.periodicity import autocorr_period, rhythm, ssm_period

FPS = 5.0


@pytest.mark.parametrize("period_s", [1.0, 2.0, 3.0])
def test_rhythm_finds_the_period_of_a_noisy_sinusoid(period_s: float):
    rng = np.random.default_rng(0)
    t = np.arange(0, 60, 1 / FPS)
    x = np.sin(2 * np.pi * t / period_s) + 0.3 * rng.normal(size=len(t))
    bands, period, strength = rhythm(x, FPS, DescriptorConfig())
    assert period == pytest.approx(period_s, rel=0.1)
    assert strength > 0.3
    assert bands.sum() > 0.8  # most power in the band of allowed periods (the rest: noise outside it)
    _, _, noise_strength = rhythm(rng.normal(size=len(t)), FPS, DescriptorConfig())
    assert noise_strength < strength / 3


def test_flat_signal_has_no_rhythm():
    bands, period, strength = rhythm(np.ones(100), FPS, DescriptorConfig())
    assert np.isnan(period) and strength == 0.0 and not bands.any()


def test_autocorrelation_and_self_similarity_give_the_repetition_period():
    rng = np.random.default_rng(1)
    t = np.arange(0, 40, 1 / FPS)
    period_s = 2.4
    x = np.sin(2 * np.pi * t / period_s)
    assert autocorr_period(x + 0.2 * rng.normal(size=len(t)), FPS, DescriptorConfig()) == pytest.approx(period_s, abs=0.2)
    # A scene embedding that cycles through the same views every 2.4 s (laying a brick, turning back).
    phase = 2 * np.pi * t / period_s
    emb = np.stack([np.cos(phase), np.sin(phase), *rng.normal(0, 0.1, (6, len(t)))], axis=1)
    assert ssm_period(emb, FPS, DescriptorConfig()) == pytest.approx(period_s, abs=0.2)
    assert np.isnan(ssm_period(rng.normal(size=(len(t), 8)), FPS, DescriptorConfig()))


@pytest.mark.parametrize(("dx", "dy"), [(6, 0), (0, -4), (5, 3)])
def test_ego_motion_of_a_known_image_shift(dx: int, dy: int):
    """The whole image moves by (dx, dy) px between frames: the camera's translation is that shift,
    in frame widths per second, with no rotation, no zoom and almost nothing left unexplained."""
    from handclust.modalities.features.motion import MotionFeatures

    rng = np.random.default_rng(2)
    w, h = 320, 180
    big = (rng.random((h + 40, w + 40)) * 255).astype(np.uint8)
    big = np.repeat(np.repeat(big[::4, ::4], 4, axis=0), 4, axis=1)[: h + 40, : w + 40]  # texture DIS can track
    prev = big[20:20 + h, 20:20 + w]  # the pipeline hands the motion stage the previous frame in grey
    cur = np.stack([big[20 - dy:20 - dy + h, 20 - dx:20 - dx + w]] * 3, axis=-1)  # content moves by (+dx, +dy)
    stage = MotionFeatures(FlowConfig(), FPS)
    stage.setup()
    out = stage({"frame": cur[None], "prev_grey": prev[None], "has_prev": np.array([True])})
    to_speed = FPS / w
    assert out["ego_tx"][0] == pytest.approx(dx * to_speed, abs=0.3 * to_speed)
    assert out["ego_ty"][0] == pytest.approx(dy * to_speed, abs=0.3 * to_speed)
    assert abs(out["ego_rotation"][0]) < 0.01 and abs(out["ego_scale"][0]) < 0.01
    assert out["ego_ratio"][0] < 0.2 and out["ego_inliers"][0] > 0.8
