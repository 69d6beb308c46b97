"""Keyframes and reel excerpts, decoded where the footage is.

The report needs a few frames of a few segments per activity (gallery, reel). Raw frames are never
stored, so they are re-decoded from the clips. After a Ray run the driver may not see the footage
(clips on worker disks or fetched from an object store by workers), so, as labelling does, the
decoding runs in Ray tasks when the run used the Ray runner; otherwise here. Every excerpt the
report will show is planned first and decoded in one pass; what failed to decode comes back as its
error message, and the report shows it in that excerpt's place.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from handclust.config import RayConfig
from handclust.progress import Progress

log = logging.getLogger(__name__)
# CPUs one excerpt-decoding Ray task asks for (tests/test_cluster_configs.py places it).
TASK_CPUS = 0.5

# (path, t_start, t_end, frames, width): one excerpt, the arguments of handclust.io.video.read_range.
Excerpt = tuple[str, float, float, int, int]
Decoded = list[npt.NDArray[np.uint8]] | str  # frames, or why they could not be decoded


def decode_one(ex: Excerpt) -> Decoded:
    from handclust.io.video import VideoError, read_range

    path, t0, t1, n, width = ex
    try:
        return read_range(path, t0, t1, n, width=width)
    except (VideoError, OSError) as exc:
        return str(exc)


def decode_excerpts(excerpts: list[Excerpt], ray_config: RayConfig | None = None,
                    progress: Progress | None = None) -> dict[Excerpt, Decoded]:
    """Each distinct excerpt decoded once: in Ray tasks when ``ray_config`` is given, else here."""
    todo = list(dict.fromkeys(excerpts))
    if not todo:
        return {}
    if progress is not None:
        progress.say(f"report: decoding {len(todo)} excerpts " + ("in Ray tasks" if ray_config is not None else "here"))
    if ray_config is None:
        return {ex: decode_one(ex) for ex in todo}
    import ray

    from handclust.runtime.ray_connect import connect

    started, where = connect(ray_config)
    log.info("report: decoding %d excerpts on %s", len(todo), where)
    try:
        task = ray.remote(num_cpus=TASK_CPUS, max_retries=2)(decode_one)
        results: list[Any] = ray.get([task.remote(ex) for ex in todo])
    finally:
        if started:
            ray.shutdown()
    return dict(zip(todo, results, strict=True))
