"""``make_sample_footage``: sample footage with a known truth, by version (the one entry point;
:mod:`handclust.synthetic.footage_v1` renders version 1, :mod:`handclust.synthetic.footage_v2` version 2 with the
pieces of version 1)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from handclust.synthetic.footage_v1 import make_sample_footage_v1
from handclust.synthetic.footage_v2 import make_sample_footage_v2


def make_sample_footage(out_dir: str | Path, n_clips: int = 4, minutes: float = 1.5, seed: int = 0,
                        fps: float = 15.0, size: tuple[int, int] = (640, 360),
                        progress: Callable[[str], None] | None = None, version: int = 1) -> Path:
    """Render ``n_clips`` clips of ``minutes`` each into ``out_dir`` with ``ground_truth.parquet``.

    ``version=1``: one trade (masonry), one bout length range, every clip at ``fps``, for quick
    tests (:func:`handclust.synthetic.footage_v1.make_sample_footage_v1`). ``version=2``: two trades in two
    worlds, bouts of varied length, low-frame-rate sources
    (:func:`handclust.synthetic.footage_v2.make_sample_footage_v2`).

    Clips that already exist (same name, recorded in ``truth.json``) are kept, so an interrupted
    call resumes.
    """
    if version == 2:
        return make_sample_footage_v2(out_dir, n_clips=n_clips, minutes=minutes, seed=seed, fps=fps, size=size,
                                      progress=progress)
    if version != 1:
        raise ValueError(f"sample footage version {version!r}: choose 1 or 2")
    return make_sample_footage_v1(out_dir, n_clips=n_clips, minutes=minutes, seed=seed, fps=fps, size=size, progress=progress)
