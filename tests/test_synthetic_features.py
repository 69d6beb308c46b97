"""The synthetic features set: written in the release layout, read back unchanged, and hard in
the planted ways (scripted order with skips, lengths from seconds to tens of seconds, per-video
style that outweighs the actions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from handclust.core.metrics import label_segments
from handclust.segment_features import load_feature_dir, read_mapping
from handclust.synthetic.features import BACKGROUND, SCRIPT, FeatureSet, make_feature_set, make_features


@pytest.fixture(scope="module")
def feature_set() -> FeatureSet:
    return make_features(n_videos=6, seed=3)


def _instance_means(fs: FeatureSet, per_video_z: bool = False) -> tuple[npt.NDArray[np.float64], np.ndarray, np.ndarray]:
    """Mean features of every true action instance, with its action and video."""
    means, actions, videos = [], [], []
    for v in fs.videos:
        x = v.features.astype(np.float64)
        if per_video_z:
            x = (x - x.mean(0)) / x.std(0)
        labels, starts, ends = label_segments(v.truth)
        for lab, a, b in zip(labels, starts, ends):
            means.append(x[a:b].mean(0))
            actions.append(lab)
            videos.append(v.name)
    return np.asarray(means), np.asarray(actions), np.asarray(videos)


def _nn_same(means: npt.NDArray[np.float64], *groups: np.ndarray) -> list[float]:
    d = ((means[:, None] - means[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = d.argmin(1)
    return [float((g[nn] == g).mean()) for g in groups]


def test_written_layout_reads_back(tmp_path: Path):
    fs = make_features(n_videos=3, seed=1, duration_scale=0.3)
    root = make_feature_set(tmp_path / "set", n_videos=3, seed=1, duration_scale=0.3)
    assert root == tmp_path / "set"
    assert sorted(p.name for p in (root / "features" / "coffee").iterdir()) == [f"P0{i}_coffee.txt" for i in (1, 2, 3)]
    assert (root / "groundTruth" / "P01_coffee.txt").is_file()
    assert read_mapping(root) == {lab: i for i, lab in enumerate([BACKGROUND, *SCRIPT])}
    loaded = load_feature_dir(root)
    assert [v.name for v in loaded] == [v.name for v in fs.videos]
    for got, want in zip(loaded, fs.videos):
        assert got.task == "coffee" and got.truth == want.truth
        assert got.features.shape == (len(want.truth or []), 64)
        np.testing.assert_allclose(got.features, want.features, atol=1e-4)


def test_same_seed_same_set_other_seed_other_set():
    a, b, c = make_features(n_videos=2, seed=5), make_features(n_videos=2, seed=5), make_features(n_videos=2, seed=6)
    assert all(np.array_equal(x.features, y.features) and x.truth == y.truth for x, y in zip(a.videos, b.videos))
    assert a.sequences == b.sequences
    assert not np.array_equal(a.videos[0].features[:10], c.videos[0].features[:10])


def test_planted_script_lengths_and_background(feature_set: FeatureSet):
    fs = feature_set
    lengths_s = []
    for v, seq in zip(fs.videos, fs.sequences):
        labels, starts, ends = label_segments(v.truth)
        assert labels[0] == labels[-1] == BACKGROUND
        assert tuple(labels[1:-1]) == seq and 3 <= len(seq) <= 6 and len(set(seq)) == len(seq)
        # The typical order with skips and neighbour swaps: no action is more than one place out.
        kept = [a for a in SCRIPT if a in seq]
        assert all(abs(kept.index(a) - i) <= 1 for i, a in enumerate(seq))
        assert len(v.features) == len(v.truth or []) and v.features.shape[1] == 64
        lengths_s += [(e - s) / fs.fps for lab, s, e in zip(labels, starts, ends) if lab != BACKGROUND]
    assert min(lengths_s) < 6 and max(lengths_s) > 25  # a few seconds to tens of seconds
    assert len({seq for seq in fs.sequences}) > 1  # videos do not all follow the same script


def test_per_video_style_outweighs_the_actions(feature_set: FeatureSet):
    means, actions, videos = _instance_means(feature_set)
    same_video, same_action = _nn_same(means, videos, actions)
    assert same_video > same_action, (same_video, same_action)  # raw features group by video
    # ...and the actions are there to find once each video's style is taken out: solvable.
    means, actions, videos = _instance_means(feature_set, per_video_z=True)
    same_video, same_action = _nn_same(means, videos, actions)
    assert same_action > 0.8 and same_action > same_video, (same_video, same_action)
    plain = make_features(n_videos=6, seed=3, style_strength=0.0)
    assert np.all(plain.video_offsets == 0) and np.all(plain.video_scales == 1)
    means, actions, videos = _instance_means(plain)
    same_video, same_action = _nn_same(means, videos, actions)
    assert same_action > same_video, (same_video, same_action)
