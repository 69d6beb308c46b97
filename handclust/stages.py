"""The shape every per-batch stage has, and the resources it asks of a runner.

A stage is a plain class: a cheap ``__init__(cfg)`` that runs on the driver, ``setup()`` that
loads weights once per worker, and ``__call__(batch) -> batch`` on numpy column dicts (Ray
Data's ``batch_format="numpy"``). The local runner calls it in a loop; the Ray runner turns
``resources`` into ``map_batches`` arguments. Stages never open files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Batch = dict[str, npt.NDArray[np.generic]]


@dataclass(frozen=True)
class Resources:
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 64


@runtime_checkable
class Stage(Protocol):
    name: str
    resources: Resources

    def setup(self) -> None: ...

    def __call__(self, batch: Batch) -> Batch: ...


def frame_step(stage_fps: float, sample_fps: float) -> int:
    """A stage that runs at ``stage_fps`` sees every ``step``-th of the frames sampled at ``sample_fps``
    (rows with ``frame_idx % step == 0``), so which frames it sees never depends on batching."""
    return max(1, round(sample_fps / stage_fps))


def limit_threads(num_cpus: float | None) -> None:
    """Hold every thread pool of this process to the ``num_cpus`` it was given (at least 1), for
    the rest of the process (an actor, a task's worker, or the driver when asked).

    Ray sets ``OMP_NUM_THREADS`` in its workers only when it is unset, and only libraries that
    read it at start-up follow it; faiss, BLAS and OpenCV otherwise start one thread per core of
    the node, and actors sharing a node then fight over the cores (clustering 10k segments took
    12.4 s under load with all threads, 4.4 s with one). Sets the variable for libraries not yet
    loaded and the limits of those already loaded (threadpoolctl: BLAS, OpenMP; faiss; OpenCV;
    torch). ``None`` changes nothing.
    """
    import math
    import os
    import sys

    if num_cpus is None:
        return
    n = max(1, math.floor(num_cpus))
    os.environ["OMP_NUM_THREADS"] = str(n)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(n)
    import cv2  # a base dependency; its pool is sized at import, so set it now for later users too

    cv2.setNumThreads(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
