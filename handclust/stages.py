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
