"""Short clips (issue 21, item 1): cameras split recordings into files and the last file is often
seconds long. Every clip with at least 2 sampled frames is processed; one with fewer is one clear
"too short" error that says what length works."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handclust.config import RunConfig, load_config
from handclust.io.footage import find_clips
from handclust.io.storage import OutputStore
from handclust.modalities.features.hands import needed_frames
from handclust.pipeline import LocalRunner
from handclust.progress import Progress


@pytest.mark.parametrize("n", [0, 1, 3, 20, 21, 50])
@pytest.mark.parametrize("max_age", [0, 2, 10])
def test_frames_near_an_anchor_for_any_clip_length(n: int, max_age: int):
    """Shorter than the window (2 * max_age + 1) included: np.convolve(mode='same') gave the window's length there."""
    anchor = np.random.default_rng(n + max_age).random(n) > 0.8
    got = needed_frames(anchor, max_age)
    want = np.array([anchor[max(0, i - max_age):i + max_age + 1].any() for i in range(n)], bool)
    assert got.shape == (n,) and got.dtype == bool and (got == want).all()


# (duration s, source fps, frame size): lengths 0.2-6 s at several source rates, and the two clips
# named in the issue (a 4 s 402x298 clip and a 2 s 16x16 clip).
CASES = [(d, fps, (96, 64)) for fps in (10.0, 25.0, 30.0) for d in (0.2, 0.5, 1.0, 2.0, 4.1, 6.0)] + [
    (4.0, 30.0, (402, 298)), (2.0, 25.0, (16, 16))]


@pytest.mark.slow
def test_clips_of_every_length_are_processed(tmp_path: Path):
    """Default config (hands on), 5 fps sampling: every clip of 2 or more sampled frames is ok with
    segments; a 0.2 s clip (1 sampled frame) is one 'too short' error naming the length that works."""
    from handclust.synthetic.footage_v1 import render_clip

    paths = []
    for i, (d, fps, size) in enumerate(CASES):
        p = tmp_path / "footage" / f"{i:02d}_production_{d}s_{fps:g}fps_{size[0]}x{size[1]}.mp4"
        p.parent.mkdir(exist_ok=True)
        render_clip(p, "production", d, seed=i, fps=fps, size=size)
        paths.append(p)
    runner = LocalRunner(load_config(None, ["progress=false"]), OutputStore(tmp_path / "out"), Progress(False))
    assert runner.hands is not None  # the hand pass is where short clips failed
    for clip in find_clips(paths, RunConfig().phase.pattern):
        st = runner.process_clip(clip)
        name = Path(clip.path).name
        if "_0.2s_" in name:
            assert st["status"] == "error", (name, st)
            assert "too short: 1 sampled frame" in st["error"] and "at least 2 sampled frames (0.40 s" in st["error"], st["error"]
            assert "re-encode" not in st["error"]  # re-encoding cannot make a clip longer
        else:
            assert st["status"] == "ok", (name, st.get("error"))
            assert st["n_frames"] >= 2 and st["n_segments"] >= 1, (name, st)
