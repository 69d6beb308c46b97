"""Keyframes and reel excerpts, decoded where the footage is.

The report needs a few frames of a few segments per activity (gallery, reel). Raw frames are never
stored, so they are re-decoded from the clips. After a Ray run the driver may not see the footage
(clips on worker disks or fetched from an object store by workers), so, as labelling does, the
decoding runs on the run's executor (:mod:`handclust.runtime.executor`): in Ray tasks when the run
used the Ray runner; otherwise here. Every excerpt the
report will show is planned first and decoded in one pass; what failed to decode comes back as its
error message, and the report shows it in that excerpt's place.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from handclust.progress import Progress
from handclust.runtime.executor import Executor, LocalExecutor

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


def decode_excerpts(excerpts: list[Excerpt], executor: Executor | None = None,
                    progress: Progress | None = None) -> dict[Excerpt, Decoded]:
    """Each distinct excerpt decoded once, on ``executor`` (Ray tasks on Ray; default: here, one after the other)."""
    todo = list(dict.fromkeys(excerpts))
    if not todo:
        return {}
    on = executor or LocalExecutor()
    if progress is not None:
        progress.say(f"report: decoding {len(todo)} excerpts " + on.place)
    results: list[Any] = on.map(decode_one, todo, num_cpus=TASK_CPUS, max_retries=2)
    if on.cluster:
        log.info("report: decoded %d excerpts on %s", len(todo), on.cluster)
    return dict(zip(todo, results, strict=True))
